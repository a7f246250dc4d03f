/**
 * The package as a host installs it: `npm pack` (which builds dist/), the tarball installed into a
 * plain-JavaScript host app with no tsx and no TypeScript, then the plugin, the client export and the
 * bin used from there by plain `node`.
 */
import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { existsSync, readFileSync } from 'node:fs'
import { mkdir, readdir, writeFile } from 'node:fs/promises'
import { createInterface } from 'node:readline'
import path from 'node:path'
import { repoRoot } from './server-process.ts'
import { connect, tempDir, validPayloads } from '../helper.ts'

/** One `npm install` of the tarball; far less once npm's cache holds the dependencies (as after `npm ci`). */
t.setTimeout(300_000)

interface RunResult {
  code: number | null
  stdout: string
  stderr: string
}

const versionOf = (name: string): string =>
  (JSON.parse(readFileSync(path.join(repoRoot, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version

/**
 * The environment of a plain host: none of tap's loaders or coverage hooks (NODE_OPTIONS), so that what
 * runs in the host runs on node alone.
 */
function hostEnv (extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [key, value] of Object.entries(process.env)) {
    if (key === 'NODE_OPTIONS' || key === 'NODE_V8_COVERAGE' || /^_?TAP/.test(key) || key.startsWith('SPRINT_')) continue
    env[key] = value
  }
  return { ...env, ...extra }
}

/** Runs a command to its end; a guard kills it if it hangs, so the test fails instead of waiting for tap's timeout. */
async function run (command: string, args: string[], options: { cwd: string, env?: NodeJS.ProcessEnv, timeoutMs?: number }): Promise<RunResult> {
  const child = spawn(command, args, { cwd: options.cwd, env: options.env ?? hostEnv(), stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (chunk: Buffer) => { stdout += chunk.toString() })
  child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
  const guard = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 60_000)
  const [code] = await once(child, 'close') as [number | null]
  clearTimeout(guard)
  return { code, stdout, stderr }
}

/** Resolves with the first stdout line of `child` that parses as JSON and passes `accept`. */
async function jsonLine (child: ChildProcess, accept: (value: any) => boolean, timeoutMs = 30_000): Promise<any> {
  let stderr = ''
  child.stderr?.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
  return await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no matching line within ${timeoutMs} ms; stderr: ${stderr}`)), timeoutMs)
    const lines = createInterface({ input: child.stdout! })
    lines.on('line', (line) => {
      let value: unknown
      try { value = JSON.parse(line) } catch { return }
      if (accept(value)) {
        clearTimeout(timer)
        lines.close()
        resolve(value)
      }
    })
    child.once('exit', (code) => {
      clearTimeout(timer)
      reject(new Error(`exited (${code}) before the line came; stderr: ${stderr}`))
    })
  })
}

/** better-sqlite3's compiled addon as prebuild-install looks for it, so the host install reuses it instead of compiling SQLite. */
async function localPrebuild (dir: string): Promise<string | undefined> {
  const addon = path.join(repoRoot, 'node_modules/better-sqlite3/build/Release/better_sqlite3.node')
  if (!existsSync(addon)) return undefined
  const stage = path.join(dir, 'stage')
  await mkdir(path.join(stage, 'build/Release'), { recursive: true })
  await writeFile(path.join(stage, 'build/Release/better_sqlite3.node'), readFileSync(addon))
  const prebuilds = path.join(dir, 'prebuilds')
  await mkdir(prebuilds)
  const name = `better-sqlite3-v${versionOf('better-sqlite3')}-node-v${process.versions.modules}-${process.platform}-${process.arch}.tar.gz`
  const packed = await run('tar', ['-czf', path.join(prebuilds, name), '-C', stage, 'build'], { cwd: dir })
  return packed.code === 0 ? prebuilds : undefined
}

// The host's files: plain ES modules, run by node with nothing but the installed packages.
const HOST_APP = `import Fastify from 'fastify'
import sprintDashboard from 'sprint-dashboard'
import { createInterface } from 'node:readline'

const app = Fastify()
await app.register(sprintDashboard, { prefix: '/sprint', dbPath: process.argv[2], metrics: true })
await app.listen({ host: '127.0.0.1', port: 0 })
// The WAL checkpointer's worker (dist/lib/checkpoint-worker.js) starts at the first write and raises this pragma once it runs.
const autocheckpoint = () => app.sprintStore.db.pragma('wal_autocheckpoint', { simple: true })
console.log(JSON.stringify({ url: 'http://127.0.0.1:' + app.server.address().port + '/sprint' }))
// One event per stdin line; the stored envelope is printed back. The end of stdin closes the app.
for await (const line of createInterface({ input: process.stdin })) {
  const { type, payload } = JSON.parse(line)
  const envelope = await app.events.emit(type, payload)
  for (const deadline = Date.now() + 10000; autocheckpoint() !== 10000 && Date.now() < deadline;) await new Promise(resolve => setTimeout(resolve, 20))
  console.log(JSON.stringify({ emitted: envelope, autocheckpoint: autocheckpoint() }))
}
await app.close()
`

const CLIENT_SCRIPT = `import { createEventClient } from 'sprint-dashboard/client'

const client = createEventClient({ url: process.argv[2] })
const envelope = await client.emit('story:status', JSON.parse(process.argv[3]))
console.log(JSON.stringify(envelope))
`

// Loaded with --import before the client script: a resolve hook that fails any attempt to load the
// server's dependencies, so the script proves that the client export needs none of them.
const SERVER_DEPENDENCY_GUARD = `import { register } from 'node:module'
register('./guard-hooks.mjs', import.meta.url)
`
const SERVER_DEPENDENCY_GUARD_HOOKS = `export async function resolve (specifier, context, next) {
  if (/^(fastify|better-sqlite3|@fastify\\/)/.test(specifier)) throw new Error('the client loaded ' + specifier)
  return await next(specifier, context)
}
`

t.test('the packed tarball installs into a plain JavaScript host and works there', async t => {
  const dir = await tempDir(t, 'sprint-dashboard-pack-')

  const packed = await run('npm', ['pack', '--pack-destination', dir, '--json'], { cwd: repoRoot, env: hostEnv(), timeoutMs: 180_000 })
  t.equal(packed.code, 0, `npm pack succeeds${packed.code === 0 ? '' : `: ${packed.stderr}`}`)
  const [manifest] = JSON.parse(packed.stdout.slice(packed.stdout.indexOf('['))) as Array<{ filename: string, files: Array<{ path: string }> }>
  const files = manifest!.files.map(file => file.path)
  t.ok(files.includes('dist/index.js') && files.includes('dist/index.d.ts'), 'ships the compiled plugin with its types')
  t.ok(files.includes('dist/emitter/client.d.ts') && files.includes('dashboard/index.html'), 'and the client types and the dashboard')
  t.notOk(files.some(file => file.startsWith('src/') || file.startsWith('test/') || file === 'dashboard/tsconfig.json'),
    'and no sources, tests or dev-only files')
  t.notOk(files.some(file => file.endsWith('.ts') && !file.endsWith('.d.ts')), 'no TypeScript to run')

  const host = path.join(dir, 'host')
  await mkdir(host)
  await writeFile(path.join(host, 'package.json'), JSON.stringify({
    name: 'host-app',
    private: true,
    type: 'module',
    // The same better-sqlite3 as the repository's, so that the local prebuild below fits it.
    overrides: { 'better-sqlite3': versionOf('better-sqlite3') },
    allowScripts: { 'better-sqlite3': true }
  }, null, 2))
  const prebuilds = await localPrebuild(dir)
  const installed = await run('npm', ['install', path.join(dir, manifest!.filename), `fastify@${versionOf('fastify')}`,
    '--prefer-offline', '--no-audit', '--no-fund'], {
    cwd: host,
    env: hostEnv(prebuilds === undefined ? {} : { npm_config_better_sqlite3_local_prebuilds: prebuilds }),
    timeoutMs: 240_000
  })
  t.equal(installed.code, 0, `npm install of the tarball succeeds${installed.code === 0 ? '' : `: ${installed.stderr}`}`)
  const modules = await readdir(path.join(host, 'node_modules'))
  t.notOk(modules.includes('tsx') || modules.includes('typescript'), 'the host has neither tsx nor TypeScript')

  await writeFile(path.join(host, 'host.mjs'), HOST_APP)
  await writeFile(path.join(host, 'post.mjs'), CLIENT_SCRIPT)
  await writeFile(path.join(host, 'guard.mjs'), SERVER_DEPENDENCY_GUARD)
  await writeFile(path.join(host, 'guard-hooks.mjs'), SERVER_DEPENDENCY_GUARD_HOOKS)

  // (a) The plugin under a prefix, an event emitted in the host, received over /sprint/ws.
  const app = spawn(process.execPath, ['host.mjs', path.join(dir, 'host.db')], { cwd: host, env: hostEnv(), stdio: ['pipe', 'pipe', 'pipe'] })
  const appExited = once(app, 'exit')
  t.teardown(() => { app.kill('SIGKILL') })
  const { url } = await jsonLine(app, value => typeof value.url === 'string')
  t.match(url, /^http:\/\/127\.0\.0\.1:\d+\/sprint$/)
  const { client, init } = await connect(t, url.replace(/^http/, 'ws') + '/ws')
  t.equal(init.type, 'init', 'the page protocol answers under the prefix')

  const emitted = jsonLine(app, value => value.emitted !== undefined)
  app.stdin!.write(JSON.stringify({ type: 'batch:start', payload: validPayloads['batch:start'] }) + '\n')
  const { emitted: envelope, autocheckpoint } = await emitted
  t.equal(autocheckpoint, 10_000, 'the checkpointer\'s worker runs from the compiled file, started by the first write')
  t.match(envelope, { id: 1, type: 'batch:start', payload: validPayloads['batch:start'] }, 'await app.events.emit resolves with the stored envelope')
  t.same(await client.next(10_000), envelope, 'and the WebSocket client receives it')

  // (b) `sprint-dashboard/client` alone posts to the running service, loading nothing of the server.
  const posted = await run(process.execPath, ['--import', './guard.mjs', 'post.mjs', url, JSON.stringify(validPayloads['story:status'])], { cwd: host })
  t.equal(posted.code, 0, `the client script succeeds${posted.code === 0 ? '' : `: ${posted.stderr}`}`)
  t.match(JSON.parse(posted.stdout), { id: 2, type: 'story:status' })
  t.match(await client.next(10_000), { id: 2, type: 'story:status', payload: validPayloads['story:status'] })
  const guarded = await run(process.execPath, ['--import', './guard.mjs', '--input-type=module', '--eval', "import 'sprint-dashboard'"], { cwd: host })
  t.not(guarded.code, 0, 'the guard does stop the plugin export, which loads fastify')
  t.match(guarded.stderr, 'the client loaded')

  // (c) The installed bin.
  const bin = path.join(host, 'node_modules/.bin/sprint-dashboard')
  const cli = await run(bin, ['emit', 'cycle:start', '--json', JSON.stringify(validPayloads['cycle:start']), '--url', url], { cwd: host })
  t.equal(cli.code, 0, `sprint-dashboard emit succeeds${cli.code === 0 ? '' : `: ${cli.stderr}`}`)
  t.equal(cli.stdout.trim(), '3', 'and prints the id')
  t.match(await client.next(10_000), { id: 3, type: 'cycle:start' })

  // (d) GET /metrics, whose prom-client must come with the package's dependencies.
  const metrics = await fetch(url + '/metrics')
  t.equal(metrics.status, 200, 'GET /metrics answers in the installed package')
  t.match(await metrics.text(), /^sprint_events_emitted_total 3$/m)

  app.stdin!.end()
  t.same(await appExited, [0, null], 'the host app closes and exits by itself')

  // (e) `sprint-dashboard serve` runs the standalone service from the install.
  const served = spawn(bin, ['serve', '--port', '0', '--db', path.join(dir, 'served.db')], {
    cwd: host,
    env: hostEnv({ SPRINT_ARTIFACTS_DIR: dir, SPRINT_WATCH: '0' }),
    stdio: ['ignore', 'pipe', 'pipe']
  })
  const servedExited = once(served, 'exit')
  t.teardown(() => { served.kill('SIGKILL') })
  const ready = await jsonLine(served, value => typeof value.dashboard === 'string')
  const health = await (await fetch(new URL('api/health', ready.dashboard))).json()
  t.match(health, { status: 'ok', lastEventId: 0 }, 'serve answers /api/health')
  const page = await fetch(ready.dashboard)
  t.equal(page.status, 200, 'and serves the dashboard page from the package')
  await page.arrayBuffer()
  const servedMetrics = await fetch(new URL('metrics', ready.dashboard))
  t.equal(servedMetrics.status, 200, 'and /metrics, on in the standalone service')
  await servedMetrics.arrayBuffer()
  served.kill('SIGTERM')
  t.same(await servedExited, [0, null], 'and stops cleanly on SIGTERM')
})
