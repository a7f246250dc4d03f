import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'

/**
 * `npx tsx bench/idle-rss.ts`: idle RSS of the standalone server with no client,
 * started as the README's first command starts it (`npx tsx src/server.ts`) and
 * from the built package (`node dist/server.js`, after `npm run build`). Waits
 * for /api/health, lets the process settle, then reads VmRSS of the server
 * process and of its whole process tree (npx and tsx start their own Node
 * processes in front of it) from /proc. Linux only.
 */

const root = fileURLToPath(new URL('..', import.meta.url))
const SETTLE_MS = Number(process.env.IDLE_SETTLE_MS ?? 5000)

function freePort (): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      server.close(() => typeof address === 'object' && address !== null ? resolve(address.port) : reject(new Error('no port')))
    })
  })
}

function children (pid: number): number[] {
  const out: number[] = []
  try {
    for (const task of readdirSync(`/proc/${pid}/task`)) {
      const list = readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').trim()
      if (list !== '') out.push(...list.split(/\s+/).map(Number))
    }
  } catch {}
  return out
}

function tree (pid: number): number[] {
  return [pid, ...children(pid).flatMap(tree)]
}

function status (pid: number): { rssKiB: number, threads: number, command: string } {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8')
  const field = (name: string): number => Number(new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(text)?.[1] ?? Number.NaN)
  const command = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ')
  return { rssKiB: field('VmRSS'), threads: field('Threads'), command }
}

async function measure (label: string, command: string, args: string[]): Promise<void> {
  const dir = mkdtempSync(path.join(tmpdir(), 'sprint-idle-rss-'))
  const port = await freePort()
  const child = spawn(command, args, {
    cwd: root,
    stdio: ['ignore', 'ignore', 'inherit'],
    env: { ...process.env, PORT: String(port), HOST: '127.0.0.1', SPRINT_DB: path.join(dir, 'idle.db'), SPRINT_ARTIFACTS_DIR: dir }
  })
  try {
    const deadline = performance.now() + 60_000
    while (true) {
      try {
        if ((await fetch(`http://127.0.0.1:${port}/api/health`)).ok) break
      } catch {}
      if (performance.now() > deadline) throw new Error(`${label}: no /api/health within 60 s`)
      await sleep(100)
    }
    await sleep(SETTLE_MS)
    const processes = tree(child.pid as number).map((pid) => ({ pid, ...status(pid) }))
    const server = [...processes].reverse().find((p) => /server\.(ts|js)/.test(p.command)) ?? processes.at(-1)!
    const total = processes.reduce((sum, p) => sum + p.rssKiB, 0)
    console.log(`${label}: server process ${(server.rssKiB / 1024).toFixed(1)} MiB RSS (${server.threads} threads); ` +
      `process tree ${(total / 1024).toFixed(1)} MiB over ${processes.length} processes`)
    for (const p of processes) console.log(`  ${String(p.pid).padStart(7)} ${(p.rssKiB / 1024).toFixed(1).padStart(6)} MiB  ${p.command.slice(0, 110)}`)
  } finally {
    for (const pid of tree(child.pid as number).reverse()) {
      try { process.kill(pid, 'SIGTERM') } catch {}
    }
    await new Promise((resolve) => child.once('exit', resolve))
    rmSync(dir, { recursive: true, force: true })
  }
}

await measure('npx tsx src/server.ts', 'npx', ['tsx', 'src/server.ts'])
await measure('node --import tsx src/server.ts', process.execPath, ['--import', 'tsx', 'src/server.ts'])
if (existsSync(path.join(root, 'dist/server.js'))) await measure('node dist/server.js', process.execPath, ['dist/server.js'])
else console.log('node dist/server.js: not built (npm run build)')
