import t from 'tap'
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import type { Envelope } from '../src/events/schemas.ts'
import { extractStoryStatuses, parseSprintStatus } from '../src/lib/sprint-status.ts'
import { parseBatchSize, remainingSteps } from '../demo/orchestrator.ts'
import { startDemoServer } from '../demo/run.ts'

/**
 * demo/orchestrator.ts as the service runs it: stopped with SIGINT in the middle of a command, it
 * finishes that command, ends its batch as stopped and exits 0; started again, it goes on from the
 * next step and never repeats one. Over the real API, without a browser (test/e2e/orchestrator.test.ts
 * does the same from the dashboard).
 */
t.setTimeout(240_000)

t.test('batch size and resume points', async t => {
  t.equal(parseBatchSize('all'), 'all')
  t.equal(parseBatchSize('2'), 2)
  t.equal(parseBatchSize('1000'), 1000)
  for (const bad of [undefined, '0', '-1', '1.5', 'ALL', '2; rm -rf /', '10000', ' 2']) t.equal(parseBatchSize(bad), null, String(bad))
  t.same(remainingSteps('backlog').map(step => step.command), ['create-story', 'dev-story', 'code-review'])
  t.same(remainingSteps('ready-for-dev').map(step => step.command), ['dev-story', 'code-review'])
  t.same(remainingSteps('in-progress').map(step => step.command), ['dev-story', 'code-review'])
  t.same(remainingSteps('review').map(step => step.command), ['code-review'])
  t.same(remainingSteps('done'), [])
})

t.test('stop in the middle of a command, then start again: the command ends, the run resumes, nothing twice', async t => {
  const server = await startDemoServer({ agentDelayMs: 15 })
  t.teardown(() => server.close())
  const events: Envelope[] = []
  const waiters: Array<{ matches: (envelope: Envelope) => boolean, resolve: (envelope: Envelope) => void }> = []
  server.app.events.onEvent(envelope => {
    events.push(envelope)
    for (const waiter of [...waiters]) {
      if (!waiter.matches(envelope)) continue
      waiters.splice(waiters.indexOf(waiter), 1)
      waiter.resolve(envelope)
    }
  })
  const next = (matches: (envelope: Envelope) => boolean) => new Promise<Envelope>(resolve => waiters.push({ matches, resolve }))
  const post = async (route: string, body?: unknown) => {
    const response = await fetch(`${server.url}/api/orchestrator/${route}`, {
      method: 'POST',
      ...(body === undefined ? {} : { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
    })
    return { status: response.status, body: await response.json() }
  }
  const statuses = async () => extractStoryStatuses(parseSprintStatus(await readFile(path.join(server.artifactsDir, 'sprint-status.yaml'), 'utf8')))

  // Run 1: stopped while dev-story of the first story runs.
  const devStory = next(e => e.type === 'command:start' && e.payload.command === 'dev-story' && e.payload.task_id === 'dev-story')
  t.equal((await post('start', { batch_size: 2 })).status, 202)
  const interrupted = (await devStory).payload as { story_key: string }
  t.equal(interrupted.story_key, '1-1-user-registration')
  const firstExit = next(e => e.type === 'orchestrator:exit')
  t.same((await post('stop')).body, { status: 'stopping' })
  t.match((await firstExit).payload, { code: 0, signal: null }, 'exit 0 when stopped on request')
  const run1 = events.splice(0)
  const types = run1.map(e => `${e.type} ${(e.payload as { command?: string, task_id?: string }).task_id ?? ''}`.trim())
  const devEnd = types.indexOf('command:end dev-story')
  t.ok(devEnd > types.indexOf('command:start dev-story'), 'the command in progress still ended')
  t.match(run1[devEnd]!.payload, { status: 'success' }, 'and ended normally, not interrupted')
  const batchEnd = run1.find(e => e.type === 'batch:end')
  t.match(batchEnd?.payload, { status: 'stopped', cycles_completed: 0 }, 'the orchestrator ended its batch as stopped')
  t.ok(run1.indexOf(batchEnd!) > devEnd)
  t.notOk(run1.some(e => e.type === 'command:start' && (e.payload as { command: string }).command === 'code-review'), 'no command started after the stop')
  t.equal((await statuses()).get('1-1-user-registration'), 'review', 'the finished command moved the story on')
  t.match((await (await fetch(`${server.url}/api/orchestrator/status`)).json()), { status: 'idle', last_exit: { code: 0 }, last_batch: { status: 'stopped', cycles_completed: 0 } })

  // Run 2: continues at code-review of the same story, then the next one; the batch completes its cycle.
  const secondExit = next(e => e.type === 'orchestrator:exit')
  t.equal((await post('start', { batch_size: 1 })).status, 202)
  t.match((await secondExit).payload, { code: 0 })
  const run2 = events.splice(0)
  const commands = (list: Envelope[]) => list
    .filter(e => e.type === 'command:start' && (e.payload as { task_id: string }).task_id === (e.payload as { command: string }).command)
    .map(e => `${(e.payload as { story_key: string }).story_key} ${(e.payload as { command: string }).command}`)
  t.same(commands(run2), [
    '1-1-user-registration code-review',
    '1-2-login-and-sessions create-story',
    '1-2-login-and-sessions dev-story',
    '1-2-login-and-sessions code-review'
  ], 'resumed at the next step of the interrupted story')
  const all = [...commands(run1), ...commands(run2)]
  t.same(all, [...new Set(all)], 'no command ran twice for a story')
  t.match(run2.find(e => e.type === 'batch:start')?.payload, { batch_id: 2, max_cycles: 1 }, 'a new batch')
  t.match(run2.find(e => e.type === 'batch:end')?.payload, { batch_id: 2, status: 'completed', cycles_completed: 1 })
  const done = [...await statuses()].filter(([, status]) => status === 'done').map(([key]) => key)
  t.same(done, ['1-1-user-registration', '1-2-login-and-sessions'])
  const doneEvents = [...run1, ...run2].filter(e => e.type === 'story:status' && (e.payload as { new_status: string }).new_status === 'done')
  t.equal(doneEvents.length, 2, 'each story reached done once')
})
