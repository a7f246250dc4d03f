import t from 'tap'
import path from 'node:path'
import { copyFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { createStore } from '../../src/lib/sqlite-store.ts'
import { epicOf, isFailedStatus, tokenCounts } from '../../src/lib/history.ts'
import { tempDir, type TestContext } from '../helper.ts'
import * as pageModel from '../../dashboard/batch-model.js'
import type { EventTypeName } from '../../src/events/schemas.ts'

const T0 = 1_767_603_600_000

async function openStore (t: TestContext, file?: string) {
  const dbFile = file ?? path.join(await tempDir(t), 'store.db')
  const store = createStore(dbFile)
  t.teardown(() => store.close())
  const append = (type: EventTypeName, payload: object, at: number) =>
    store.appendEvent(type, payload, JSON.stringify(payload), T0 + at)
  const detail = (id: number) => store.history.getBatchDetail(id, store.getLastEventId())
  return { store, append, detail, file: dbFile }
}

const ids = (story: string, command: string, task: string) => ({ story_key: story, command, task_id: task })

t.test('tokenCounts splits input (cache included) from output; a lone total counts as input', async t => {
  t.same(tokenCounts({ input_tokens: 38, cache_creation_input_tokens: 9650, cache_read_input_tokens: 131204, output_tokens: 3120, tokens: 144012, total_cost_usd: 0.2417 }),
    { tokensIn: 38 + 9650 + 131204, tokensOut: 3120, costUsd: 0.2417 }, 'the total is ignored when the split is there')
  t.same(tokenCounts({ tokens: 20000 }), { tokensIn: 20000, tokensOut: 0, costUsd: 0 })
  t.same(tokenCounts({ tokens: 20000, output_tokens: 500 }), { tokensIn: 19500, tokensOut: 500, costUsd: 0 }, 'a total with only the output split')
  t.same(tokenCounts({ cache_read_input_tokens: 10 }), { tokensIn: 10, tokensOut: 0, costUsd: 0 })
  t.same(tokenCounts({ duration_ms: 5 }), { tokensIn: 0, tokensOut: 0, costUsd: 0 })
  t.same(tokenCounts(null), { tokensIn: 0, tokensOut: 0, costUsd: 0 })
  t.same(tokenCounts({ input_tokens: -5, output_tokens: Number.NaN, total_cost_usd: 'lots' }), { tokensIn: 0, tokensOut: 0, costUsd: 0 }, 'nonsense counts nothing')
})

t.test('epicOf and isFailedStatus', async t => {
  t.equal(epicOf('2a-1-foo'), '2a')
  t.equal(epicOf('10-3'), '10')
  t.equal(epicOf('standalone'), 'standalone')
  for (const status of ['failed', 'FAILED', 'failure', 'fail', 'error', 'errored', 'timeout', 'timed-out', 'crashed', 'aborted', 'killed']) {
    t.ok(isFailedStatus(status), status)
  }
  for (const status of ['success', 'end', 'done', 'running', 'interrupted', 'completed', 'failsafe-ok']) {
    t.notOk(isFailedStatus(status), status)
  }
})

/** Three batches with every case of the recorder, as the orchestrator would send them. */
function scriptedHistory (append: (type: EventTypeName, payload: object, at: number) => unknown): void {
  // Batch 1: one story done with metrics, one failing without, one started by the cycle only.
  append('batch:start', { batch_id: 1, max_cycles: 2 }, 0)
  append('cycle:start', { cycle_number: 1, story_keys: ['1-1-a', '1-2-b', '1-3-c'] }, 1_000)
  append('command:start', ids('1-1-a', 'create-story', 'draft'), 2_000)
  append('command:end', { ...ids('1-1-a', 'create-story', 'draft'), status: 'success', metrics: { duration_ms: 1, input_tokens: 100, cache_read_input_tokens: 900, output_tokens: 50, tokens: 1050, total_cost_usd: 0.1 } }, 12_000)
  append('command:start', ids('1-1-a', 'dev-story', 'implement'), 13_000)
  append('command:end', { ...ids('1-1-a', 'dev-story', 'implement'), status: 'success', metrics: { tokens: 2000, total_cost_usd: 0.2 } }, 33_000)
  append('story:status', { story_key: '1-1-a', old_status: 'review', new_status: 'done' }, 34_000)
  append('command:start', ids('1-2-b', 'dev-story', 'implement'), 35_000)
  append('command:end', { ...ids('1-2-b', 'dev-story', 'implement'), status: 'failed' }, 45_000)
  append('story:status', { story_key: '9-9-never-started', old_status: null, new_status: 'done' }, 46_000)
  append('batch:end', { batch_id: 1, cycles_completed: 1, status: 'completed' }, 50_000)
  // Between batches: not history.
  append('command:start', ids('1-2-b', 'dev-story', 'outside'), 55_000)
  // Batch 2: 1-2-b again (a story spanning two batches), an end without a start, then replaced by batch 3.
  append('batch:start', { batch_id: 2, max_cycles: 'all' }, 60_000)
  append('command:start', ids('1-2-b', 'dev-story', 'retry'), 61_000)
  append('command:end', { ...ids('1-2-b', 'dev-story', 'retry'), status: 'success', metrics: { output_tokens: 7 } }, 71_000)
  append('command:end', { ...ids('1-2-b', 'code-review', 'review'), status: 'error', metrics: { total_cost_usd: 0.05 } }, 72_000)
  append('story:status', { story_key: '1-2-b', old_status: 'in-progress', new_status: 'blocked' }, 73_000)
  append('command:start', ids('1-3-c', 'dev-story', 'implement'), 74_000)
  // Batch 3 starts while 2 still runs: 2 is stopped and its open runs end with it.
  append('batch:start', { batch_id: 3, max_cycles: 1 }, 80_000)
  append('command:start', ids('1-3-c', 'dev-story', 'implement'), 81_000)
  append('story:status', { story_key: '1-3-c', old_status: 'in-progress', new_status: 'review' }, 82_000)
}

t.test('recording: story runs and command runs per batch, as the events happen', async t => {
  const { store, append, detail } = await openStore(t)
  scriptedHistory(append)

  const one = detail(1)!
  t.match(one.batch, { id: 1, status: 'completed', story_count: 3, duration_ms: 50_000, tokens_in: 3000, tokens_out: 50, cost_usd: 0.3 })
  t.same(one.stories.map(s => [s.story_key, s.epic, s.status, s.failed, s.started_at - T0, s.ended_at! - T0, s.duration_ms]), [
    ['1-1-a', '1', 'done', false, 1_000, 34_000, 33_000],
    ['1-2-b', '1', 'in-progress', true, 1_000, 50_000, 49_000],
    ['1-3-c', '1', 'in-progress', false, 1_000, 50_000, 49_000]
  ], 'started by the cycle, ended by story:status or by the batch\'s end; failed by its last command')
  t.same(one.stories[0]!.commands.map(c => [c.command, c.task_id, c.status, c.duration_ms, c.tokens_in, c.tokens_out, c.cost_usd]), [
    ['create-story', 'draft', 'success', 10_000, 1000, 50, 0.1],
    ['dev-story', 'implement', 'success', 20_000, 2000, 0, 0.2]
  ])
  t.same(one.stories[0]!.commands[0]!.metrics, { duration_ms: 1, input_tokens: 100, cache_read_input_tokens: 900, output_tokens: 50, tokens: 1050, total_cost_usd: 0.1 },
    'metrics as sent; the agent\'s own duration_ms stays inside them')
  t.equal(one.stories[1]!.commands[0]!.metrics, null, 'a run without metrics')
  t.same(one.stats, { stories_done: 1, stories_failed: 1, stories_in_progress: 1, command_count: 3, duration_ms: 50_000, tokens_in: 3000, tokens_out: 50, cost_usd: 0.3 })
  t.notOk(one.stories.some(s => s.story_key === '9-9-never-started'), 'a status change alone does not make a run')

  const two = detail(2)!
  t.match(two.batch, { id: 2, status: 'stopped', ended_at: T0 + 80_000, story_count: 2, tokens_in: 0, tokens_out: 7, cost_usd: 0.05 })
  const b = two.stories.find(s => s.story_key === '1-2-b')!
  t.match(b, { status: 'blocked', failed: true, started_at: T0 + 61_000, ended_at: T0 + 73_000 }, 'the same story\'s second run, in its own batch')
  t.same(b.commands.map(c => [c.task_id, c.status, c.started_at - T0, c.duration_ms]), [['retry', 'success', 61_000, 10_000], ['review', 'error', 72_000, 0]],
    'an end without a start is a run of no length; the run outside any batch is nowhere')
  t.match(two.stories.find(s => s.story_key === '1-3-c'), {
    status: 'in-progress',
    ended_at: T0 + 80_000,
    commands: [{ status: 'interrupted', failed: false, ended_at: T0 + 80_000, duration_ms: 6_000 }]
  }, 'a new batch:start ends the replaced batch\'s open runs')

  const three = detail(3)!
  t.match(three.batch, { status: 'running', ended_at: null, duration_ms: null, story_count: 1 })
  t.match(three.stories, [{ story_key: '1-3-c', status: 'review', ended_at: null, duration_ms: null, commands: [{ status: 'running', ended_at: null, duration_ms: null, metrics: null }] }])
  t.same(three.stats, { stories_done: 0, stories_failed: 0, stories_in_progress: 1, command_count: 1, duration_ms: null, tokens_in: 0, tokens_out: 0, cost_usd: 0 })
  t.equal(three.last_event_id, store.getLastEventId())

  t.equal(store.history.getBatchDetail(99, 0), null)
  const listed = store.history.listBatches(2, 0)
  t.equal(listed.total, 3)
  t.same(listed.batches.map(b => b.id), [3, 2], 'newest first, one page')
  t.same(store.history.listBatches(2, 2).batches.map(b => b.id), [1])
  t.same(listed.batches[1], two.batch, 'the list and the detail agree')
})

t.test('rebuilding from the stored events gives what live recording gave', async t => {
  const { store, append, detail } = await openStore(t)
  scriptedHistory(append)
  const live = [1, 2, 3].map(detail)
  t.equal(store.history.rebuildFromEvents(), 20, 'the batch events are replayed; progress and events outside a batch are not')
  t.same([1, 2, 3].map(detail), live)
})

t.test('a database written by the release before schema versions is upgraded in place, its batches rebuilt', async t => {
  const file = path.join(await tempDir(t), 'old.db')
  await copyFile(fileURLToPath(new URL('../fixtures/pre-history/sprint-v0.db', import.meta.url)), file)
  const { store, detail, append } = await openStore(t, file)
  t.same(store.migration, { from: 0, to: 4, applied: ['events, batches, stories, commands, background tasks', 'batches: all_done status and batch_mode column', 'story_runs and command_runs, rebuilt from the stored events', 'events.idempotency_key'] })
  t.equal(store.countEvents(), 15, 'the events are kept')
  t.match(store.getBatch(1), { status: 'completed', cycles_completed: 1, batch_mode: 'fixed' }, 'and the batch rows')

  const one = detail(1)!
  t.same(one.stats, { stories_done: 1, stories_failed: 1, stories_in_progress: 0, command_count: 3, duration_ms: 250_000, tokens_in: 28_000, tokens_out: 300, cost_usd: 0.12 })
  t.same(one.stories.map(s => [s.story_key, s.status, s.commands.length]), [['1-1-account-signup', 'done', 2], ['1-2-invoice-export', 'in-progress', 1]])
  t.match(detail(2)!.stories, [{ story_key: '1-2-invoice-export', commands: [{ task_id: 'implement-2', status: 'interrupted', duration_ms: 99_000 }] }])

  // New events are recorded on top, and a second open migrates nothing.
  append('batch:start', { batch_id: 3, max_cycles: 1 }, 500_000)
  append('command:start', ids('1-2-invoice-export', 'dev-story', 'implement-3'), 501_000)
  t.equal(detail(3)!.stats.command_count, 1)
  append('batch:end', { batch_id: 3, status: 'all_done' }, 502_000)
  t.match(detail(3)!.batch, { status: 'all_done', cycles_completed: 0 }, 'the upgraded batches table takes the new outcome')
  store.close()
  const again = createStore(file)
  t.teardown(() => again.close())
  t.same(again.migration.applied, [])
  t.equal(again.history.getBatchDetail(3, 0)!.stats.command_count, 1)
})

t.test('a batch\'s events page by id', async t => {
  const { store, append } = await openStore(t)
  append('command:progress', { ...ids('x', 'c', 't'), message: 'before any batch' }, 0)
  append('batch:start', { batch_id: 5, max_cycles: 1 }, 1)
  for (let i = 0; i < 4; i++) append('command:progress', { ...ids('x', 'c', 't'), message: `m${i}` }, 2 + i)
  append('batch:end', { batch_id: 5, cycles_completed: 1, status: 'completed' }, 10)
  append('command:progress', { ...ids('x', 'c', 't'), message: 'after' }, 11)
  const first = store.history.getBatchEvents(5, 0, 4)
  t.same(first.rows.map(r => r.type), ['batch:start', 'command:progress', 'command:progress', 'command:progress'])
  t.equal(first.next, first.rows.at(-1)!.id)
  const second = store.history.getBatchEvents(5, first.next!, 4)
  t.same(second.rows.map(r => r.type), ['command:progress', 'batch:end'], 'batch:end belongs to the batch it ends')
  t.equal(second.next, null, 'the last page says so')
  t.same(store.history.getBatchEvents(6, 0, 4), { rows: [], next: null })
})

t.test('the page\'s live model follows the same rules as the store', async t => {
  const metrics = [null, {}, { tokens: 5 }, { tokens: 20, output_tokens: 5 }, { input_tokens: 1, cache_read_input_tokens: 2, output_tokens: 3, total_cost_usd: 0.5 }, { input_tokens: -1 }]
  for (const m of metrics) t.same(pageModel.tokenCounts(m), tokenCounts(m), JSON.stringify(m))
  for (const status of ['failed', 'Error', 'timed_out', 'success', 'end', 'interrupted']) t.equal(pageModel.isFailedStatus(status), isFailedStatus(status), status)

  // A batch built live from its events, as the dashboard does, equals the same batch read back.
  const { store, append, detail } = await openStore(t)
  scriptedHistory(append)
  const lanes = (model: ReturnType<typeof pageModel.createBatchModel>) => [...model.lanes.values()].map(lane => ({
    ...lane, runs: lane.runs.map(run => ({ ...run, cost_usd: Math.round(run.cost_usd * 1e6) / 1e6 }))
  }))
  for (const id of [1, 2, 3]) {
    const read = detail(id)!
    const live = pageModel.createBatchModel({ ...read.batch, ended_at: null, status: 'running' })
    for (const row of store.history.getBatchEvents(id, 0, 1000).rows) {
      live.apply({ id: row.id, type: row.type, payload: JSON.parse(row.payload), timestamp: row.timestamp } as never)
    }
    // A batch replaced by a new batch:start is ended by the store; live, that is the next batch's start.
    if (read.batch.status === 'stopped' && live.endedAt === null) live.apply({ id: 0, type: 'batch:end', payload: { batch_id: id, status: 'stopped' }, timestamp: read.batch.ended_at! } as never)
    t.same(lanes(live), lanes(pageModel.modelFromDetail(read)), `batch ${id}`)
  }
})
