import t from 'tap'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { createInterface } from 'node:readline'
import { TestClient } from './helper.ts'

/**
 * `npm run demo` end to end: the real demo process (service, watcher, the demo orchestrator started
 * by the service as its child, exec bridge, fake agent), watched by a WebSocket client that asserts
 * the complete event sequence.
 */
// Twelve agent runs, each a process start: more than the default 120 s on a loaded machine.
t.setTimeout(300_000)

t.test('the demo sprint: complete event sequence, then the process exits by itself', async (t) => {
  // --once: exit when the batch it starts is over (without it the demo stays up for the Start button).
  const child = spawn(process.execPath, ['--import', 'tsx', 'demo/run.ts', '--port', '0', '--delay-ms', '1', '--once'], { stdio: ['ignore', 'pipe', 'inherit'] })
  // A guard against a hung demo, not a wait: everything below continues as soon as its event arrives.
  const guard = setTimeout(() => child.kill('SIGKILL'), 280_000)
  t.teardown(() => {
    clearTimeout(guard)
    child.kill('SIGKILL')
  })
  const exited = once(child, 'exit') as Promise<[number | null, string | null]>
  const output: string[] = []
  const lines = createInterface({ input: child.stdout })
  const url = await new Promise<string>((resolve, reject) => {
    lines.on('line', (line) => {
      output.push(line)
      const match = /open (http:\/\/\S+)\/ in a browser/.exec(line)
      if (match !== null) resolve(match[1]!)
    })
    child.once('exit', () => reject(new Error(`demo exited before printing its URL:\n${output.join('\n')}`)))
  })
  t.match(url, /^http:\/\/127\.0\.0\.1:\d+$/)

  // The loop starts as soon as the URL is printed; `since=0` replays whatever this client missed.
  const client = new TestClient(`${url.replace('http:', 'ws:')}/ws?since=0`)
  t.teardown(() => client.socket.terminate())
  const init = await client.next(30_000)
  t.equal(init.type, 'init')
  const received: any[] = [...init.payload.events]
  while (received.at(-1)?.type !== 'orchestrator:exit') received.push(await client.next(60_000))

  const [code, signal] = await exited
  t.equal(signal, null, 'not killed')
  t.equal(code, 0, 'the demo exits by itself when the batch is done')
  t.match(output.join('\n'), /batch 1 completed after 2 cycle/)

  t.same(received.map((envelope) => envelope.id), received.map((_envelope, index) => received[0].id + index), 'no gaps, no duplicates')

  const describe = (envelope: any): string => {
    const p = envelope.payload
    switch (envelope.type) {
      case 'orchestrator:start': return `orchestrator:start batch size ${p.batch_size}`
      case 'orchestrator:exit': return `orchestrator:exit code ${p.code} signal ${p.signal}`
      case 'batch:start': return `batch:start ${p.batch_id} max ${p.max_cycles} ${p.batch_mode}`
      case 'batch:end': return `batch:end ${p.batch_id} cycles ${p.cycles_completed} ${p.status}`
      case 'cycle:start': return `cycle:start ${p.cycle_number} ${p.story_keys.join(',')}`
      case 'cycle:end': return `cycle:end ${p.cycle_number} ${p.completed_stories.join(',')}`
      case 'command:start': return `start ${p.story_key} ${p.command} ${p.task_id}`
      case 'command:end': return `end ${p.story_key} ${p.command} ${p.task_id} ${p.status}`
      case 'story:status': return `status ${p.story_key} ${p.old_status} -> ${p.new_status}`
      default: return `${envelope.type} ${JSON.stringify(p)}`
    }
  }
  const story = (key: string): string[] => [
    `start ${key} create-story create-story`,
    `start ${key} create-story context`,
    `end ${key} create-story context success`,
    `start ${key} create-story draft`,
    `end ${key} create-story draft success`,
    `end ${key} create-story create-story success`,
    `status ${key} backlog -> ready-for-dev`,
    `status ${key} ready-for-dev -> in-progress`,
    `start ${key} dev-story dev-story`,
    `start ${key} dev-story tests`,
    `end ${key} dev-story tests success`,
    `start ${key} dev-story implement`,
    `end ${key} dev-story implement success`,
    `end ${key} dev-story dev-story success`,
    `status ${key} in-progress -> review`,
    `start ${key} code-review code-review`,
    `start ${key} code-review review`,
    `end ${key} code-review review success`,
    `end ${key} code-review code-review success`,
    `status ${key} review -> done`
  ]
  t.same(received.filter((envelope) => envelope.type !== 'command:progress').map(describe), [
    'orchestrator:start batch size 2',
    'batch:start 1 max 2 fixed',
    'cycle:start 1 1-1-user-registration,1-2-login-and-sessions',
    ...story('1-1-user-registration'),
    ...story('1-2-login-and-sessions'),
    'cycle:end 1 1-1-user-registration,1-2-login-and-sessions',
    'cycle:start 2 1-3-password-reset,2-1-board-view',
    ...story('1-3-password-reset'),
    ...story('2-1-board-view'),
    'cycle:end 2 1-3-password-reset,2-1-board-view',
    'batch:end 1 cycles 2 completed',
    'orchestrator:exit code 0 signal null'
  ], 'the complete sequence of everything but progress lines')

  // Progress lines: only ever inside their own task, and every command shows some.
  const open = new Set<string>()
  const withProgress = new Set<string>()
  for (const envelope of received) {
    const p = envelope.payload
    const key = `${p.story_key} ${p.command} ${p.task_id}`
    if (envelope.type === 'command:start') open.add(key)
    if (envelope.type === 'command:end') open.delete(key)
    if (envelope.type === 'command:progress') {
      if (!open.has(key)) t.fail(`progress outside its task: ${key}: ${p.message}`)
      if (p.task_id === p.command) withProgress.add(key)
    }
  }
  t.equal(open.size, 0, 'every started task ended')
  t.equal(withProgress.size, 12, 'all 12 agent commands showed progress')
  const metrics = received.filter((envelope) => envelope.type === 'command:end' && envelope.payload.task_id === envelope.payload.command)
  t.ok(metrics.every((envelope) => envelope.payload.metrics.total_cost_usd > 0 && envelope.payload.metrics.exit_code === 0), 'agent metrics on every command:end')
})
