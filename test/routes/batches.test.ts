import t from 'tap'
import path from 'node:path'
import { copyFile } from 'node:fs/promises'
import { Writable } from 'node:stream'
import { fileURLToPath } from 'node:url'
import { runExec } from '../../src/emitter/exec.ts'
import { createEventClient } from '../../src/emitter/client.ts'
import { COMMANDS_CSV_COLUMNS } from '../../src/routes/batches.ts'
import { listen, tempDir, type ListenResult, type TestContext } from '../helper.ts'
import { devStoryMetrics } from '../fixtures/fake-agent.ts'

/**
 * The history routes over real HTTP, on a database that started as a file of the release before
 * schema versions (batches 1 and 2, see test/fixtures/pre-history) and then received a scripted
 * history through POST /api/events, in the orchestrator's own shapes: an all_done batch, a stopped
 * one without cycles_completed, an error batch, a running one; commands with and without metrics;
 * a story spanning two batches.
 */

/** The fixture's clock (see make.ts); the new batches start a day later. */
const FIXTURE_EPOCH = 1_767_603_600_000
const T = FIXTURE_EPOCH + 86_400_000

/** The exec bridge's metrics for one agent run (test/fixtures/agent/dev-story.ndjson through cli.ts exec). */
const execMetrics = { ...devStoryMetrics, exit_code: 0 }
const FORMULA_KEY = '=HYPERLINK("http://evil.example","open me")'
const AWKWARD_TASK = 'a,"b"\r\nc'

const ids = (story: string, command: string, task: string) => ({ story_key: story, command, task_id: task })

/** Every event of the scripted history, with the producer's timestamp (ms after T). */
const script: Array<[number, string, Record<string, unknown>]> = [
  [0, 'batch:start', { batch_id: 3, max_cycles: null, batch_mode: 'all', orchestrator_version: '2.1' }],
  [1_000, 'cycle:start', { cycle_number: 1, story_keys: ['2a-1-usage-metering', '2a-2-rate-plans'] }],
  [2_000, 'command:start', { ...ids('2a-1-usage-metering', 'create-story', 'create-story'), message: '' }],
  [62_000, 'command:end', { ...ids('2a-1-usage-metering', 'create-story', 'create-story'), status: 'success', message: '', metrics: execMetrics }],
  [63_000, 'command:start', { ...ids('2a-1-usage-metering', 'dev-story', 'implement'), message: 'Implementing' }],
  [183_000, 'command:end', { ...ids('2a-1-usage-metering', 'dev-story', 'implement'), status: 'end', message: '', metrics: { tokens: 20_000 } }],
  [184_000, 'story:status', { story_key: '2a-1-usage-metering', old_status: 'review', new_status: 'done' }],
  [185_000, 'command:start', ids('2a-2-rate-plans', 'dev-story', 'implement')],
  [245_000, 'command:end', { ...ids('2a-2-rate-plans', 'dev-story', 'implement'), status: 'failed', message: 'tests failed' }],
  [246_000, 'cycle:end', { cycle_number: 1, completed_stories: ['2a-1-usage-metering'] }],
  [250_000, 'batch:end', { batch_id: 3, cycles_completed: 1, status: 'all_done' }],
  // Between batches: stored, but no batch's.
  [260_000, 'command:progress', { ...ids('2a-2-rate-plans', 'dev-story', 'implement'), message: 'between batches' }],
  // Batch 4: the same story again, stopped by the operator (no cycles_completed) while a review runs.
  [300_000, 'batch:start', { batch_id: 4, max_cycles: 2, batch_mode: 'fixed' }],
  [301_000, 'command:start', ids('2a-2-rate-plans', 'dev-story', 'implement-2')],
  [341_000, 'command:end', { ...ids('2a-2-rate-plans', 'dev-story', 'implement-2'), status: 'success', metrics: { input_tokens: 500, output_tokens: 100, total_cost_usd: 0.05 } }],
  [342_000, 'command:start', ids('2a-2-rate-plans', 'code-review', 'review')],
  [400_000, 'batch:end', { batch_id: 4, status: 'stopped' }],
  // Batch 5: an error, with text that must not become a spreadsheet formula.
  [500_000, 'batch:start', { batch_id: 5, max_cycles: 'all' }],
  [501_000, 'command:start', ids(FORMULA_KEY, '+cmd', AWKWARD_TASK)],
  [502_500, 'command:end', { ...ids(FORMULA_KEY, '+cmd', AWKWARD_TASK), status: 'error', metrics: { total_cost_usd: 0.01 } }],
  [503_000, 'error', { type: 'agent_crash', message: 'boom' }],
  [510_000, 'batch:end', { batch_id: 5, cycles_completed: 0, status: 'error' }],
  // Batch 6: still running.
  [600_000, 'batch:start', { batch_id: 6, max_cycles: 1, batch_mode: 'fixed' }],
  [601_000, 'command:start', ids('3-1-invoices', 'dev-story', 'dev-story')]
]

async function post (url: string, events: unknown[]): Promise<Array<{ id: number, type: string }>> {
  const response = await fetch(`${url}/api/events`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(events) })
  if (response.status !== 201) throw new Error(`POST /api/events: ${response.status} ${await response.text()}`)
  return (await response.json() as { events: Array<{ id: number, type: string }> }).events
}

async function get (url: string, init?: RequestInit): Promise<{ status: number, body: any, headers: Headers, text: string }> {
  const response = await fetch(url, init)
  const text = await response.text()
  let body: unknown = null
  try { body = JSON.parse(text) } catch {}
  return { status: response.status, body, headers: response.headers, text }
}

/** RFC 4180, strictly: quoted fields may hold commas, quotes (doubled) and line breaks; records end with CRLF. */
function parseCsv (text: string): string[][] {
  const records: string[][] = []
  let record: string[] = []
  let field = ''
  let i = 0
  while (i < text.length) {
    if (text[i] === '"') {
      i++
      while (i < text.length) {
        if (text[i] === '"' && text[i + 1] === '"') { field += '"'; i += 2 } else if (text[i] === '"') { i++; break } else field += text[i++]
      }
    } else if (text[i] === ',') {
      record.push(field); field = ''; i++
    } else if (text.startsWith('\r\n', i)) {
      record.push(field); records.push(record); record = []; field = ''; i += 2
    } else {
      field += text[i++]
    }
  }
  if (field !== '' || record.length > 0) throw new Error('the last record does not end with CRLF')
  return records
}

async function scriptedService (t: TestContext): Promise<ListenResult & { eventIds: number[] }> {
  const dbPath = path.join(await tempDir(t), 'history.db')
  await copyFile(fileURLToPath(new URL('../fixtures/pre-history/sprint-v0.db', import.meta.url)), dbPath)
  const service = await listen(t, { dbPath })
  const stored = await post(service.url, script.map(([at, type, payload]) => ({ type, payload, timestamp: T + at })))
  return { ...service, eventIds: stored.map(e => e.id) }
}

t.test('the history routes over HTTP', async t => {
  const service = await scriptedService(t)
  const { url, eventIds } = service
  const idOf = (index: number): number => eventIds[index]!

  await t.test('GET /api/batches lists every batch newest first, with its totals', async t => {
    const { status, body, headers } = await get(`${url}/api/batches`, { headers: { origin: 'http://elsewhere.example' } })
    t.equal(status, 200)
    t.equal(headers.get('access-control-allow-origin'), '*', 'the same CORS as the other read routes')
    t.equal(body.total, 6)
    t.same(body.batches.map((b: { id: number }) => b.id), [6, 5, 4, 3, 2, 1])
    t.same(body.batches[3], {
      id: 3,
      started_at: T,
      ended_at: T + 250_000,
      max_cycles: 'all',
      batch_mode: 'all',
      cycles_completed: 1,
      status: 'all_done',
      story_count: 2,
      duration_ms: 250_000,
      tokens_in: 38 + 9650 + 131204 + 20_000,
      tokens_out: 3120,
      cost_usd: 0.2417
    }, 'input counts cache reads and writes; a lone tokens total counts as input')
    t.same(body.batches[2], {
      id: 4,
      started_at: T + 300_000,
      ended_at: T + 400_000,
      max_cycles: 2,
      batch_mode: 'fixed',
      cycles_completed: 0,
      status: 'stopped',
      story_count: 1,
      duration_ms: 100_000,
      tokens_in: 500,
      tokens_out: 100,
      cost_usd: 0.05
    }, 'a stop without cycles_completed keeps the count reached')
    t.match(body.batches[1], { id: 5, status: 'error', story_count: 1, tokens_in: 0, tokens_out: 0, cost_usd: 0.01 })
    t.same(body.batches[0], {
      id: 6,
      started_at: T + 600_000,
      ended_at: null,
      max_cycles: 1,
      batch_mode: 'fixed',
      cycles_completed: 0,
      status: 'running',
      story_count: 1,
      duration_ms: null,
      tokens_in: 0,
      tokens_out: 0,
      cost_usd: 0
    }, 'a running batch has no duration yet')
    t.same(body.batches[5], {
      id: 1,
      started_at: FIXTURE_EPOCH,
      ended_at: FIXTURE_EPOCH + 250_000,
      max_cycles: 2,
      batch_mode: 'fixed',
      cycles_completed: 1,
      status: 'completed',
      story_count: 2,
      duration_ms: 250_000,
      tokens_in: 28_000,
      tokens_out: 300,
      cost_usd: 0.12
    }, 'a batch from before the upgrade, rebuilt from its stored events')
    t.match(body.batches[4], { id: 2, status: 'stopped', max_cycles: 'all', batch_mode: 'all', story_count: 1 })
  })

  await t.test('limit and offset page the list; the total stays', async t => {
    const page = await get(`${url}/api/batches?limit=2&offset=1`)
    t.same(page.body.batches.map((b: { id: number }) => b.id), [5, 4])
    t.equal(page.body.total, 6)
    t.same((await get(`${url}/api/batches?limit=200&offset=5`)).body.batches.map((b: { id: number }) => b.id), [1])
    t.same((await get(`${url}/api/batches?offset=6`)).body, { batches: [], total: 6 })
  })

  await t.test('GET /api/batches/:id: stories, their command runs and the stats', async t => {
    const { status, body } = await get(`${url}/api/batches/3`)
    t.equal(status, 200)
    t.same(body.batch, (await get(`${url}/api/batches`)).body.batches[3], 'the same batch as the list shows')
    t.same(body.stats, {
      stories_done: 1,
      stories_failed: 1,
      stories_in_progress: 0,
      command_count: 3,
      duration_ms: 250_000,
      tokens_in: 160_892,
      tokens_out: 3120,
      cost_usd: 0.2417
    })
    t.ok(body.last_event_id >= idOf(10), 'the answer says which events it reflects')
    t.same(body.stories, [
      {
        story_key: '2a-1-usage-metering',
        epic: '2a',
        status: 'done',
        failed: false,
        started_at: T + 1_000,
        ended_at: T + 184_000,
        duration_ms: 183_000,
        tokens_in: 160_892,
        tokens_out: 3120,
        cost_usd: 0.2417,
        commands: [
          {
            command: 'create-story',
            task_id: 'create-story',
            status: 'success',
            failed: false,
            started_at: T + 2_000,
            ended_at: T + 62_000,
            duration_ms: 60_000,
            tokens_in: 38 + 9650 + 131204,
            tokens_out: 3120,
            cost_usd: 0.2417,
            metrics: execMetrics
          },
          {
            command: 'dev-story',
            task_id: 'implement',
            status: 'end',
            failed: false,
            started_at: T + 63_000,
            ended_at: T + 183_000,
            duration_ms: 120_000,
            tokens_in: 20_000,
            tokens_out: 0,
            cost_usd: 0,
            metrics: { tokens: 20_000 }
          }
        ]
      },
      {
        story_key: '2a-2-rate-plans',
        epic: '2a',
        status: 'in-progress',
        failed: true,
        started_at: T + 1_000,
        ended_at: T + 250_000,
        duration_ms: 249_000,
        tokens_in: 0,
        tokens_out: 0,
        cost_usd: 0,
        commands: [{
          command: 'dev-story',
          task_id: 'implement',
          status: 'failed',
          failed: true,
          started_at: T + 185_000,
          ended_at: T + 245_000,
          duration_ms: 60_000,
          tokens_in: 0,
          tokens_out: 0,
          cost_usd: 0,
          metrics: null
        }]
      }
    ], 'duration_ms is ended_at - started_at; the agent\'s own duration_ms stays in metrics')
  })

  await t.test('a story spanning two batches has a run in each; a stop interrupts what runs', async t => {
    const { body } = await get(`${url}/api/batches/4`)
    t.same(body.stories.map((s: { story_key: string }) => s.story_key), ['2a-2-rate-plans'])
    t.match(body.stories[0], { status: 'in-progress', failed: false, started_at: T + 301_000, ended_at: T + 400_000, tokens_in: 500, tokens_out: 100, cost_usd: 0.05 })
    t.same(body.stories[0].commands.map((c: { task_id: string, status: string, duration_ms: number }) => [c.task_id, c.status, c.duration_ms]),
      [['implement-2', 'success', 40_000], ['review', 'interrupted', 58_000]])
    t.same(body.stats, { stories_done: 0, stories_failed: 0, stories_in_progress: 1, command_count: 2, duration_ms: 100_000, tokens_in: 500, tokens_out: 100, cost_usd: 0.05 })

    const running = (await get(`${url}/api/batches/6`)).body
    t.match(running.stories, [{ story_key: '3-1-invoices', epic: '3', ended_at: null, duration_ms: null, commands: [{ status: 'running', ended_at: null, duration_ms: null, metrics: null }] }])
    t.same(running.stats, { stories_done: 0, stories_failed: 0, stories_in_progress: 1, command_count: 1, duration_ms: null, tokens_in: 0, tokens_out: 0, cost_usd: 0 })

    const old = (await get(`${url}/api/batches/1`)).body
    t.same(old.stories.map((s: { story_key: string, status: string, failed: boolean, commands: unknown[] }) => [s.story_key, s.status, s.failed, s.commands.length]),
      [['1-1-account-signup', 'done', false, 2], ['1-2-invoice-export', 'in-progress', true, 1]], 'the pre-upgrade batch reads like the others')
  })

  await t.test('GET /api/batches/:id/events pages the batch\'s events in id order', async t => {
    const batch3 = eventIds.slice(0, 11)
    const collected: number[] = []
    let after = 0
    let pages = 0
    for (;;) {
      const { status, body } = await get(`${url}/api/batches/3/events?after=${after}&limit=4`)
      t.equal(status, 200)
      collected.push(...body.events.map((e: { id: number }) => e.id))
      pages++
      if (body.next === null) break
      t.equal(body.next, body.events.at(-1).id, 'next is the last id of the page')
      after = body.next
    }
    t.same(collected, batch3, 'every event of the batch, none of another, none between batches')
    t.equal(pages, 3)
    const first = await get(`${url}/api/batches/3/events`)
    t.same(first.body.events[0], { id: idOf(0), type: 'batch:start', payload: script[0]![2], timestamp: T }, 'envelopes as stored, undeclared fields kept')
    t.equal(first.body.next, null, 'one page of the default 500 holds them all')
    t.same((await get(`${url}/api/batches/3/events?after=${idOf(10)}`)).body, { events: [], next: null })
    t.same((await get(`${url}/api/batches/1/events?limit=2`)).body.events.map((e: { type: string }) => e.type), ['batch:start', 'cycle:start'], 'the old batch\'s events too')
  })

  await t.test('GET /api/batches/:id/commands.csv: one row per run, RFC 4180, formulas defused', async t => {
    const { status, text, headers } = await get(`${url}/api/batches/3/commands.csv`)
    t.equal(status, 200)
    t.equal(headers.get('content-type'), 'text/csv; charset=utf-8')
    t.equal(headers.get('content-disposition'), 'attachment; filename="batch-3-commands.csv"')
    const rows = parseCsv(text)
    t.same(rows[0], [...COMMANDS_CSV_COLUMNS])
    t.same(rows[0], ['batch', 'story', 'epic', 'command', 'task_id', 'status', 'started_at', 'ended_at', 'duration_s', 'tokens_in', 'tokens_out', 'cost_usd'])
    t.same(rows.slice(1), [
      ['3', '2a-1-usage-metering', '2a', 'create-story', 'create-story', 'success', new Date(T + 2_000).toISOString(), new Date(T + 62_000).toISOString(), '60', '140892', '3120', '0.2417'],
      ['3', '2a-1-usage-metering', '2a', 'dev-story', 'implement', 'end', new Date(T + 63_000).toISOString(), new Date(T + 183_000).toISOString(), '120', '20000', '0', '0'],
      ['3', '2a-2-rate-plans', '2a', 'dev-story', 'implement', 'failed', new Date(T + 185_000).toISOString(), new Date(T + 245_000).toISOString(), '60', '0', '0', '0']
    ])

    const hostile = await get(`${url}/api/batches/5/commands.csv`)
    t.same(parseCsv(hostile.text).slice(1), [
      ['5', `'${FORMULA_KEY}`, `'${FORMULA_KEY.split('-')[0]!}`, "'+cmd", AWKWARD_TASK, 'error', new Date(T + 501_000).toISOString(), new Date(T + 502_500).toISOString(), '1.5', '0', '0', '0.01']
    ], 'cells starting with = or + get a leading quote; commas, quotes and line breaks are quoted')
    t.match(hostile.text, '"\'=HYPERLINK(""http://evil.example"",""open me"")"', 'quotes inside are doubled')

    const running = parseCsv((await get(`${url}/api/batches/6/commands.csv`)).text)
    t.same(running[1]!.slice(6, 9), [new Date(T + 601_000).toISOString(), '', ''], 'a running command has no end and no duration yet')
    t.same(parseCsv((await get(`${url}/api/batches/2/commands.csv`)).text).length, 2, 'the old batch exports too')
  })

  await t.test('an unknown batch is 404 SPRINT_BATCH_NOT_FOUND on every route', async t => {
    for (const route of ['/api/batches/999', '/api/batches/999/events', '/api/batches/999/commands.csv']) {
      const { status, body } = await get(url + route)
      t.equal(status, 404, route)
      t.match(body, { statusCode: 404, code: 'SPRINT_BATCH_NOT_FOUND', message: 'There is no batch 999' }, route)
    }
  })

  await t.test('a bad id or query is 400 SPRINT_INVALID_REQUEST with details', async t => {
    const cases: Array<[string, string]> = [
      ['/api/batches/abc', '/id'],
      ['/api/batches/1.5', '/id'],
      ['/api/batches/-1', '/id'],
      ['/api/batches/12345678901234567890', '/id'],
      ['/api/batches/abc/events', '/id'],
      ['/api/batches/1.0/commands.csv', '/id'],
      ['/api/batches?limit=0', '/limit'],
      ['/api/batches?limit=201', '/limit'],
      ['/api/batches?limit=abc', '/limit'],
      ['/api/batches?limit=2.5', '/limit'],
      ['/api/batches?offset=-1', '/offset'],
      ['/api/batches?limit=1&limit=2', '/limit'],
      ['/api/batches/3/events?after=x', '/after'],
      ['/api/batches/3/events?after=-5', '/after'],
      ['/api/batches/3/events?limit=1001', '/limit'],
      ['/api/batches/3/events?limit=0', '/limit']
    ]
    for (const [route, field] of cases) {
      const { status, body } = await get(url + route)
      t.equal(status, 400, route)
      t.equal(body.code, 'SPRINT_INVALID_REQUEST', route)
      t.ok(body.details.some((detail: { path: string }) => detail.path === field), `${route}: details name ${field}`)
      t.match(body.message, field, `${route}: the message names the field`)
    }
  })
})

t.test('the exec bridge\'s metrics split into tokens in and out in the history', async t => {
  const { url } = await listen(t)
  await post(url, [{ type: 'batch:start', payload: { batch_id: 1, max_cycles: 1 } }])
  const discard = new Writable({ write: (_chunk, _encoding, callback) => callback() })
  const fakeAgent = fileURLToPath(new URL('../fixtures/fake-agent.ts', import.meta.url))
  const code = await runExec({
    client: createEventClient({ url }),
    storyKey: '2a-1',
    command: 'dev-story',
    taskId: 'dev-story',
    argv: [process.execPath, '--import', 'tsx', fakeAgent, 'dev-story', '--delay-ms', '0', '--var', 'story_key=2a-1', '--var', 'epic=2a', '--var', 'command=dev-story'],
    stdout: discard,
    stderr: discard
  })
  t.equal(code, 0)
  const { body } = await get(`${url}/api/batches/1`)
  const run = body.stories[0].commands.find((c: { task_id: string }) => c.task_id === 'dev-story')
  t.match(run.metrics, { input_tokens: 38, cache_creation_input_tokens: 9650, cache_read_input_tokens: 131204, output_tokens: 3120, tokens: 144012 },
    'the bridge sends the split besides the total')
  t.match(run, { tokens_in: 38 + 9650 + 131204, tokens_out: 3120, cost_usd: 0.2417 })
})
