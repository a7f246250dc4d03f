import t, { type Test } from 'tap'
import { connect, listen, type TestClient } from '../helper.ts'

/**
 * What the sprint runner's orchestrator.py sends, shape by shape (issue #13 §1), posted over real HTTP
 * with its own timestamps and with fields the catalogue does not declare: every event is stored and
 * reaches a connected WebSocket client exactly as sent, in order, and the batch projection reads the
 * way the orchestrator meant it.
 */

interface Sent {
  type: string
  payload: Record<string, unknown>
  timestamp: number
}

/**
 * One orchestrator run holding every event shape of §1: a fixed batch that completes, an open-ended
 * one that ends `all_done`, and a fixed one stopped by the operator (no `cycles_completed`).
 * `first` numbers the three batches; timestamps are a second apart from `since`, in the past.
 */
function orchestratorRun (first: number, since: number): Sent[] {
  const [fixed, open, stopped] = [first, first + 1, first + 2]
  let at = since
  const event = (type: string, payload: Record<string, unknown>): Sent => ({ type, payload, timestamp: (at += 1000) })
  const story = '3-1-search-index'
  const command = (name: string, task: string, status?: string): Sent[] => [
    event('command:start', { story_key: story, command: name, task_id: task, message: '' }),
    event('command:end', { story_key: story, command: name, task_id: task, message: status === 'failed' ? 'exit 1' : '', status: status ?? 'end' })
  ]
  return [
    event('batch:start', { batch_id: fixed, max_cycles: 2, batch_mode: 'fixed' }),
    event('context:create', { status: 'starting' }),
    event('context:create', { status: 'complete' }),
    event('context:copied', { source: '/repo/_bmad-output/planning-artifacts/project-context.md', destination: '/repo/_bmad-output/planning-artifacts/sprint-project-context.md', message: 'Project context copied for sprint batch' }),
    event('cycle:start', { cycle_number: 1, story_keys: [story, '3-2-search-ui'] }),
    event('story:status', { story_key: story, old_status: null, new_status: 'in-progress' }),
    ...command('sprint-create-story', 'setup'),
    event('injection:empty', { command: 'sprint-create-story-discovery', story_keys: [story], message: 'No files matched for injection - check story keys and file paths' }),
    event('injection:warning', { command: 'sprint-dev-story', size_bytes: 120_000, threshold_bytes: 102_400, message: 'Injection size (120000 bytes) exceeds warning threshold', files: 7 }),
    ...command('sprint-dev-story', 'implement', 'success'),
    event('background:complete', { task_id: 4, task_type: 'sprint-story-review-chain', status: 'completed' }),
    event('background:error', { task_type: 'sprint-tech-spec-review-chain', status: 'error', error: 'spawn claude ENOENT' }),
    event('story:status', { story_key: story, old_status: 'in-progress', new_status: 'done' }),
    event('cycle:end', { cycle_number: 1, completed_stories: [story] }),
    event('cycle:start', { cycle_number: 2, story_keys: ['3-2-search-ui'] }),
    ...command('sprint-code-review-1', 'review', 'failed'),
    event('cycle:end', { cycle_number: 2, completed_stories: [] }),
    event('batch:end', { batch_id: fixed, cycles_completed: 2, status: 'completed' }),

    event('batch:start', { batch_id: open, max_cycles: null, batch_mode: 'all' }),
    event('context:refresh', { task_id: 12, status: 'started' }),
    event('context:copy_failed', { source: '/repo/_bmad-output/planning-artifacts/project-context.md', reason: 'Source file does not exist', message: 'project-context.md not found - agents will not have project context' }),
    event('batch:warning', { batch_id: open, message: 'Project context not available - proceeding without context', warning_type: 'context_unavailable' }),
    event('context:complete', { task_id: 12, status: 'completed' }),
    event('context:error', { task_id: 13, status: 'error', error: 'generate-project-context exited with 1', stderr_tail: ['line 1', 'line 2'] }),
    event('context:fresh', { message: 'Project context is fresh, skipping regeneration' }),
    event('cycle:start', { cycle_number: 1, story_keys: ['3-2-search-ui'] }),
    event('story:status', { story_key: '3-2-search-ui', old_status: 'backlog', new_status: 'done', epic_id: '3' }),
    event('cycle:end', { cycle_number: 1, completed_stories: ['3-2-search-ui'] }),
    event('cleanup:file_moved', { source: '/repo/impl/3-2-search-ui.md', destination: '/repo/archived-artifacts/3-2-search-ui.md', file_name: '3-2-search-ui.md' }),
    event('cleanup:file_error', { file: '/repo/impl/3-2-search-ui-discovery.md', error: "[Errno 13] Permission denied: '/repo/impl/3-2-search-ui-discovery.md'", message: 'Failed to move 3-2-search-ui-discovery.md' }),
    event('cleanup:error', { error: 'Failed to create archive directory: [Errno 28] No space left on device', message: 'Cannot proceed with cleanup' }),
    event('cleanup:complete', { files_moved: 1, story_keys: ['3-2-search-ui'], message: 'Cleanup complete: 1 files archived' }),
    event('batch:end', { batch_id: open, cycles_completed: 1, status: 'all_done' }),

    // A field the catalogue does not know, on the batch as on anything: kept, never a reason to refuse.
    event('batch:start', { batch_id: stopped, max_cycles: 3, batch_mode: 'fixed', requested_by: { user: 'ops', via: ['cli', 'dashboard'] } }),
    event('cycle:start', { cycle_number: 1, story_keys: [] }),
    event('cycle:end', { cycle_number: 1, completed_stories: [] }),
    event('batch:end', { batch_id: stopped, status: 'stopped' })
  ]
}

/** Every type of issue #13 §1, so the run above is checked to hold them all. */
const section1Types = ['batch:start', 'batch:warning', 'batch:end', 'cycle:start', 'cycle:end', 'command:start', 'command:end',
  'story:status', 'context:create', 'context:refresh', 'context:complete', 'context:error', 'context:fresh', 'context:copied',
  'context:copy_failed', 'injection:empty', 'injection:warning', 'background:complete', 'background:error', 'cleanup:complete',
  'cleanup:error', 'cleanup:file_moved', 'cleanup:file_error']

async function post (url: string, body: unknown): Promise<{ status: number, body: any }> {
  const response = await fetch(`${url}/api/events`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
  return { status: response.status, body: await response.json() }
}

/** The client receives exactly `sent`, in order: payloads deep-equal, the producer's timestamps, increasing ids. */
async function receivesAsSent (t: Test, client: TestClient, sent: Sent[]): Promise<number[]> {
  const received = await client.take(sent.length)
  t.strictSame(received.map(({ type, payload, timestamp }) => ({ type, payload, timestamp })), sent, 'every event as sent, in order')
  const ids = received.map(envelope => envelope.id as number)
  t.ok(ids.every((id, index) => index === 0 || id === ids[index - 1]! + 1), 'ids the server assigned, increasing')
  return ids
}

t.test('the run holds every shape of §1, with the details that used to be refused', async t => {
  const run = orchestratorRun(1, 0)
  t.same([...new Set(run.map(event => event.type))].sort(), [...section1Types].sort())
  const batchEnds = run.filter(event => event.type === 'batch:end').map(event => event.payload)
  t.same(batchEnds.map(payload => payload.status), ['completed', 'all_done', 'stopped'])
  t.notOk('cycles_completed' in batchEnds[2]!)
  t.ok(run.some(event => event.type === 'batch:start' && event.payload.max_cycles === null))
  t.ok(run.some(event => event.type === 'story:status' && event.payload.old_status === null))
  t.ok(run.some(event => event.type === 'command:end' && event.payload.message === ''))
  t.ok(run.some(event => event.type === 'background:error' && !('task_id' in event.payload)))
})

t.test('in one array and one by one: stored, broadcast as sent, and projected as meant', async t => {
  const { app, url, wsUrl } = await listen(t)
  const { client } = await connect(t, wsUrl)
  const since = Date.now() - 3_600_000

  await t.test('one array', async t => {
    const run = orchestratorRun(1, since)
    const reply = await post(url, run)
    t.equal(reply.status, 201, reply.status === 201 ? '' : JSON.stringify(reply.body).slice(0, 500))
    t.strictSame(reply.body.events.map(({ type, payload, timestamp }: Sent) => ({ type, payload, timestamp })), run, 'the reply holds them as sent')
    const ids = await receivesAsSent(t, client, run)
    t.same(reply.body.events.map((envelope: { id: number }) => envelope.id), ids)
  })

  await t.test('one by one', async t => {
    const run = orchestratorRun(4, since + 600_000)
    for (const [index, event] of run.entries()) {
      const reply = await post(url, event)
      t.equal(reply.status, 201, `${index}: ${event.type}${reply.status === 201 ? '' : ` ${JSON.stringify(reply.body).slice(0, 300)}`}`)
      if (event.type === 'batch:warning') {
        // Mid-run, a dashboard that connects now sees the open-ended batch running and the warning in its log.
        const { init } = await connect(t, wsUrl)
        t.match(init.payload.batch, { id: 5, status: 'running', max_cycles: 'all', batch_mode: 'all', started_at: run.find(e => e.type === 'batch:start' && e.payload.batch_id === 5)!.timestamp })
        t.strictSame(init.payload.events.at(-1).payload, event.payload, 'the warning is in its snapshot')
      }
    }
    await receivesAsSent(t, client, run)
  })

  await t.test('the batch projection', async t => {
    const store = app.sprintStore
    const endOf = (run: Sent[], id: number) => run.find(e => e.type === 'batch:end' && e.payload.batch_id === id)!.timestamp
    for (const [first, since_] of [[1, since], [4, since + 600_000]] as const) {
      const run = orchestratorRun(first, since_)
      t.match(store.getBatch(first), { status: 'completed', cycles_completed: 2, max_cycles: 2, batch_mode: 'fixed', ended_at: endOf(run, first) }, `#${first} completed its 2 cycles`)
      t.match(store.getBatch(first + 1), { status: 'all_done', cycles_completed: 1, max_cycles: 'all', batch_mode: 'all', ended_at: endOf(run, first + 1) }, `#${first + 1} ended with no story left`)
      t.match(store.getBatch(first + 2), { status: 'stopped', cycles_completed: 1, max_cycles: 3, batch_mode: 'fixed' }, `#${first + 2} stopped, keeping the cycle it reached`)
      t.equal(store.getBatch(first)?.started_at, run[0]!.timestamp, 'started when the producer said')
    }
    t.equal(store.getActiveBatch(), null, 'nothing left running')
    const warnedUnder = store.db.prepare("SELECT batch_id FROM events WHERE type = 'batch:warning' ORDER BY id").pluck().all()
    t.same(warnedUnder, [2, 5], 'each warning is filed under the batch it warned about')
    t.same(store.listCommands('3-1-search-index').map(c => [c.command, c.status]), [
      ['sprint-create-story', 'end'], ['sprint-dev-story', 'success'], ['sprint-code-review-1', 'failed'],
      ['sprint-create-story', 'end'], ['sprint-dev-story', 'success'], ['sprint-code-review-1', 'failed']
    ], 'every command:start / command:end pair is a finished command')
    t.equal(store.getStory('3-2-search-ui')?.status, 'done')
    const { init } = await connect(t, wsUrl)
    t.equal(init.payload.batch, null, 'init agrees: no batch running')
  })
})
