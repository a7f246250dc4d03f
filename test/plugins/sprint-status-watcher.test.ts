import t from 'tap'
import Fastify from 'fastify'
import { mkdir, rename, rm, utimes, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { pathToFileURL } from 'node:url'
import sprintStatusWatcher from '../../src/plugins/sprint-status-watcher.ts'
import type { SprintEvents } from '../../src/plugins/events.ts'
import { build, connect, tempDir, type TestContext } from '../helper.ts'

interface Emitted {
  type: string
  payload: any
  at: number
}

/** Collects what the plugin emits; `next()` waits for the next one. */
class EmittedQueue {
  private readonly items: Emitted[] = []
  private waiter: (() => void) | null = null

  push (item: Emitted): void {
    this.items.push(item)
    this.waiter?.()
  }

  async next (timeoutMs = 3000): Promise<Emitted> {
    if (this.items.length === 0) {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          this.waiter = null
          reject(new Error(`nothing emitted within ${timeoutMs} ms`))
        }, timeoutMs)
        this.waiter = () => {
          clearTimeout(timer)
          this.waiter = null
          resolve()
        }
      })
    }
    return this.items.shift()!
  }

  async take (count: number): Promise<Emitted[]> {
    const items: Emitted[] = []
    for (let i = 0; i < count; i++) items.push(await this.next())
    return items
  }

  get length (): number {
    return this.items.length
  }
}

const sprint = (statuses: Record<string, string>, extra = '') => [
  '# sprint-status.yaml, written by the sprint runner',
  'project: demo',
  extra,
  'development_status:',
  ...Object.entries(statuses).map(([key, status]) => `  ${key}: ${status}`),
  ''
].join('\n')

const initial = {
  'epic-1': 'in-progress',
  '1-1-login': 'done',
  '1-2-logout': 'backlog',
  'epic-1-retrospective': 'optional',
  'epic-2': 'backlog',
  '2-1-dashboard': 'backlog'
}

/** The watcher alone on a bare Fastify, with a stand-in for `fastify.events`. */
async function startWatcher (t: TestContext, dir: string, options: { pollIntervalMs?: number, debounceMs?: number } = {}) {
  const app = Fastify({ logger: false })
  const emitted = new EmittedQueue()
  let id = 0
  const events = {
    emit: (type: string, payload: unknown) => {
      emitted.push({ type, payload, at: Date.now() })
      return { id: ++id, type, payload, timestamp: Date.now() }
    }
  }
  app.decorate('events', events as unknown as SprintEvents)
  await app.register(sprintStatusWatcher, { artifactsDir: dir, ...options })
  t.teardown(() => app.close())
  await app.ready()
  return { app, emitted }
}

async function writeAtomically (file: string, text: string): Promise<void> {
  const temporary = `${file}.tmp-${process.pid}`
  await writeFile(temporary, text)
  await rename(temporary, file)
}

t.test('baseline gives nothing; an in-place edit gives story:status for changed stories only, within 1 s', async (t) => {
  const dir = await tempDir(t)
  const file = path.join(dir, 'sprint-status.yaml')
  await writeFile(file, sprint(initial))
  const { emitted } = await startWatcher(t, dir)

  const writtenAt = Date.now()
  await writeFile(file, sprint({ ...initial, 'epic-1': 'done', '1-2-logout': 'in-progress', 'epic-1-retrospective': 'done', '2-2-alerts': 'backlog' }))
  const [first, second] = await emitted.take(2)
  t.same(first, { type: 'story:status', payload: { story_key: '1-2-logout', old_status: 'backlog', new_status: 'in-progress' }, at: first!.at },
    'the first thing emitted is the change: the baseline produced nothing')
  t.same(second?.payload, { story_key: '2-2-alerts', old_status: null, new_status: 'backlog' }, 'a new story has old_status null')
  t.ok(first!.at - writtenAt < 1000, `emitted ${first!.at - writtenAt} ms after the write`)
  t.equal(emitted.length, 0, 'epics and retrospectives are not stories')
})

t.test('a file replaced atomically by rename', async (t) => {
  const dir = await tempDir(t)
  const file = path.join(dir, 'sprint-status.yaml')
  await writeFile(file, sprint(initial))
  const { emitted } = await startWatcher(t, dir)

  await writeAtomically(file, sprint({ ...initial, '1-2-logout': 'review' }))
  t.same((await emitted.next()).payload, { story_key: '1-2-logout', old_status: 'backlog', new_status: 'review' })
  await writeAtomically(file, sprint({ ...initial, '1-2-logout': 'done' }))
  t.same((await emitted.next()).payload, { story_key: '1-2-logout', old_status: 'review', new_status: 'done' }, 'and again: the directory watch survives the inode change')
})

t.test('deleted and recreated: compared with the last good state', async (t) => {
  const dir = await tempDir(t)
  const file = path.join(dir, 'sprint-status.yaml')
  await writeFile(file, sprint(initial))
  const { emitted } = await startWatcher(t, dir)

  await rm(file)
  await writeFile(file, sprint({ ...initial, '2-1-dashboard': 'ready-for-dev' }))
  t.same((await emitted.next()).payload, { story_key: '2-1-dashboard', old_status: 'backlog', new_status: 'ready-for-dev' },
    'only the story that changed, not every story as new')

  // An empty file (a writer that truncates, then writes) also keeps the last good state.
  await writeFile(file, '')
  await writeFile(file, sprint({ ...initial, '2-1-dashboard': 'in-progress' }))
  t.same((await emitted.next()).payload, { story_key: '2-1-dashboard', old_status: 'ready-for-dev', new_status: 'in-progress' })
})

t.test('a file that does not parse: one error event, last good state kept', async (t) => {
  const dir = await tempDir(t)
  const file = path.join(dir, 'sprint-status.yaml')
  await writeFile(file, sprint(initial))
  const { emitted } = await startWatcher(t, dir)

  const broken = 'development_status:\n  1-1-login: done\n   1-2-logout: [oops\n'
  await writeFile(file, broken)
  const error = await emitted.next()
  t.equal(error.type, 'error')
  t.equal(error.payload.type, 'sprint_status_parse')
  t.match(error.payload.message, /^sprint-status\.yaml: .*line \d+/)
  t.match(error.payload.context, { file: 'sprint-status.yaml', line: Number, column: Number })

  // Touching the broken file (new mtime, same text) is not a new failure.
  const later = new Date(Date.now() + 5000)
  await utimes(file, later, later)
  await writeFile(file, broken)

  await writeFile(file, sprint({ ...initial, '1-2-logout': 'in-progress' }))
  t.same(await emitted.next().then((next) => next.payload), { story_key: '1-2-logout', old_status: 'backlog', new_status: 'in-progress' },
    'no second error; the fixed file is compared with the state before the breakage')

  await writeFile(file, '- a list\n- not a mapping\n')
  t.match((await emitted.next()).payload, { type: 'sprint_status_parse', message: /must be a mapping/ }, 'a new breakage is reported again')
})

t.test('no file at start: stories of a file created later are all new', async (t) => {
  const dir = await tempDir(t)
  const file = path.join(dir, 'sprint-status.yaml')
  const { emitted } = await startWatcher(t, dir)
  await writeAtomically(file, sprint({ 'epic-1': 'backlog', '1-1-login': 'backlog', '1-2-logout': 'drafted' }))
  t.same((await emitted.take(2)).map((item) => item.payload), [
    { story_key: '1-1-login', old_status: null, new_status: 'backlog' },
    { story_key: '1-2-logout', old_status: null, new_status: 'drafted' }
  ])
})

t.test('a broken file at start: reported, and the stories of the first good version are new', async (t) => {
  const dir = await tempDir(t)
  const file = path.join(dir, 'sprint-status.yaml')
  await writeFile(file, 'development_status: {\n')
  const { emitted } = await startWatcher(t, dir)
  t.match((await emitted.next()).payload, { type: 'sprint_status_parse' })

  await writeFile(file, sprint({ '1-1-login': 'review' }))
  t.same((await emitted.next()).payload, { story_key: '1-1-login', old_status: null, new_status: 'review' },
    'the state before is unknown, so old_status is null')
})

t.test('quick successive writes are read once (debounce)', async (t) => {
  const dir = await tempDir(t)
  const file = path.join(dir, 'sprint-status.yaml')
  await writeFile(file, sprint(initial))
  const { emitted } = await startWatcher(t, dir)

  for (const status of ['ready-for-dev', 'in-progress', 'review']) await writeFile(file, sprint({ ...initial, '1-2-logout': status }))
  t.same((await emitted.next()).payload, { story_key: '1-2-logout', old_status: 'backlog', new_status: 'review' })
  await writeFile(file, sprint({ ...initial, '1-2-logout': 'done' }))
  t.same((await emitted.next()).payload, { story_key: '1-2-logout', old_status: 'review', new_status: 'done' }, 'no events for the intermediate states')
})

t.test('an artifacts directory that appears later is picked up by the poll', async (t) => {
  const parent = await tempDir(t)
  const dir = path.join(parent, 'artifacts')
  const { emitted } = await startWatcher(t, dir, { pollIntervalMs: 50 })
  await mkdir(dir)
  await writeFile(path.join(dir, 'sprint-status.yaml'), sprint({ '1-1-login': 'backlog' }))
  t.same((await emitted.next()).payload, { story_key: '1-1-login', old_status: null, new_status: 'backlog' })
  await writeFile(path.join(dir, 'sprint-status.yaml'), sprint({ '1-1-login': 'done' }))
  t.same((await emitted.next()).payload, { story_key: '1-1-login', old_status: 'backlog', new_status: 'done' })
})

t.test('close releases the poll timer', async (t) => {
  const dir = await tempDir(t)
  await writeFile(path.join(dir, 'sprint-status.yaml'), sprint(initial))
  const timers = () => process.getActiveResourcesInfo().filter((resource) => resource === 'Timeout').length
  const before = timers()
  const app = Fastify({ logger: false })
  app.decorate('events', { emit: () => { throw new Error('nothing should be emitted') } } as unknown as SprintEvents)
  await app.register(sprintStatusWatcher, { artifactsDir: dir })
  await app.ready()
  t.ok(timers() > before, 'a poll timer while running')
  await app.close()
  t.equal(timers(), before, 'timers cleared')
})

t.test('close releases the directory watcher: a process that closes the app exits by itself', async (t) => {
  const dir = await tempDir(t)
  await writeFile(path.join(dir, 'sprint-status.yaml'), sprint(initial))
  // Both the watcher and the poll timer keep a process alive; only onClose releases them.
  const script = `
    import Fastify from 'fastify'
    import { writeFile } from 'node:fs/promises'
    import sprintStatusWatcher from ${JSON.stringify(pathToFileURL(path.resolve('src/plugins/sprint-status-watcher.ts')).href)}
    const app = Fastify()
    const emitted = []
    let changed
    const seen = new Promise((resolve) => { changed = resolve })
    app.decorate('events', { emit: (type, payload) => { emitted.push(payload); changed() } })
    await app.register(sprintStatusWatcher, { artifactsDir: ${JSON.stringify(dir)} })
    await app.ready()
    await writeFile(${JSON.stringify(path.join(dir, 'sprint-status.yaml'))}, ${JSON.stringify(sprint({ '1-1-login': 'review' }))})
    await seen
    await app.close()
    console.log(JSON.stringify(emitted))
  `
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '--eval', script], { cwd: process.cwd(), stdio: ['ignore', 'pipe', 'inherit'] })
  let output = ''
  child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString() })
  const timer = setTimeout(() => child.kill('SIGKILL'), 20_000)
  const [code, signal] = await once(child, 'exit') as [number | null, string | null]
  clearTimeout(timer)
  t.equal(signal, null, 'not killed: it exited on its own after close')
  t.equal(code, 0)
  t.same(JSON.parse(output), [{ story_key: '1-1-login', old_status: 'done', new_status: 'review' }])
})

t.test('in the service: story:status reaches WebSocket clients', async (t) => {
  const dir = await tempDir(t)
  await writeFile(path.join(dir, 'sprint-status.yaml'), sprint(initial))
  const { app } = await build(t, { artifactsDir: dir, watchSprintStatus: true })
  await app.listen({ host: '127.0.0.1', port: 0 })
  const address = app.server.address() as { port: number }
  const { client, init } = await connect(t, `ws://127.0.0.1:${address.port}/ws`)
  t.same(init.payload.events, [], 'no events for the baseline')
  await writeAtomically(path.join(dir, 'sprint-status.yaml'), sprint({ ...initial, '2-1-dashboard': 'ready-for-dev' }))
  t.match(await client.next(), { id: Number, type: 'story:status', payload: { story_key: '2-1-dashboard', old_status: 'backlog', new_status: 'ready-for-dev' } })
})

t.test('options are checked at registration', async (t) => {
  for (const options of [{}, { artifactsDir: '' }, { artifactsDir: '/tmp', pollIntervalMs: 0 }, { artifactsDir: '/tmp', debounceMs: 1.5 }]) {
    const app = Fastify({ logger: false })
    app.decorate('events', {} as unknown as SprintEvents)
    await t.rejects(async () => {
      await app.register(sprintStatusWatcher, options as never)
      await app.ready()
    }, { code: 'SPRINT_INVALID_OPTION' }, JSON.stringify(options))
    await app.close()
  }
})
