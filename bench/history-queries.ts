import Fastify from 'fastify'
import { mkdtempSync, rmSync } from 'node:fs'
import { cpus, loadavg, tmpdir } from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'
import sprintDashboard from '../src/app.ts'
import { createStore } from '../src/lib/sqlite-store.ts'
import type { EventTypeName } from '../src/events/schemas.ts'

/**
 * `npm run bench:history` — how long the history queries take on a database of realistic size
 * (issue 14: 100,000 events; listing 20 batches and reading one batch of 200 stories and 2,000
 * command runs should each take under 20 ms). The database is written through the real store (so
 * the history is recorded as in production), then each query is timed in process (the store call)
 * and over HTTP (the route on a listening server, serialisation included). Prints medians, p95 and
 * CPU time per call.
 */

const { values: flags } = parseArgs({
  options: {
    events: { type: 'string', default: '100000' },
    rounds: { type: 'string', default: '200' },
    help: { type: 'boolean', default: false }
  }
})
if (flags.help) {
  console.log('usage: npm run bench:history -- [--events 100000] [--rounds 200]')
  process.exit(0)
}
const targetEvents = Number(flags.events)
const rounds = Number(flags.rounds)

const BIG = { stories: 200, runsPerStory: 10, progressPerRun: 20 }
const SMALL = { stories: 20, runsPerStory: 5, progressPerRun: 9 }
const COMMANDS = ['create-story', 'story-context', 'dev-story', 'code-review', 'story-done']

type Input = { type: EventTypeName, payload: object }

/** The events of one batch, in order: cycles, command runs with progress and metrics, story statuses. */
function batchEvents (batchId: number, shape: typeof BIG): Input[] {
  const events: Input[] = [{ type: 'batch:start', payload: { batch_id: batchId, max_cycles: 'all' } }]
  const keys = Array.from({ length: shape.stories }, (_, i) => `${1 + (i % 9)}-${i + 1}-story-${batchId}-${i}`)
  events.push({ type: 'cycle:start', payload: { cycle_number: 1, story_keys: keys.slice(0, 1000) } })
  for (const key of keys) {
    for (let run = 0; run < shape.runsPerStory; run++) {
      const ids = { story_key: key, command: COMMANDS[run % COMMANDS.length]!, task_id: `task-${run}` }
      events.push({ type: 'command:start', payload: ids })
      for (let p = 0; p < shape.progressPerRun; p++) events.push({ type: 'command:progress', payload: { ...ids, message: `Edit src/module-${p}.ts` } })
      const metrics = run % 4 === 3
        ? undefined
        : { duration_ms: 60_000 + run, input_tokens: 40, cache_creation_input_tokens: 9000, cache_read_input_tokens: 120_000, output_tokens: 3000, tokens: 132_040, total_cost_usd: 0.24 }
      events.push({ type: 'command:end', payload: { ...ids, status: run % 7 === 6 ? 'failed' : 'success', ...(metrics === undefined ? {} : { metrics }) } })
    }
    events.push({ type: 'story:status', payload: { story_key: key, old_status: 'review', new_status: 'done' } })
  }
  events.push({ type: 'cycle:end', payload: { cycle_number: 1, completed_stories: keys.slice(0, 1000) } })
  events.push({ type: 'batch:end', payload: { batch_id: batchId, cycles_completed: 1, status: 'completed' } })
  return events
}

function stats (samples: number[]): { median: number, p95: number, max: number } {
  const sorted = [...samples].sort((a, b) => a - b)
  const at = (q: number): number => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!
  return { median: at(0.5), p95: at(0.95), max: sorted.at(-1)! }
}

/**
 * Wall time per call (median, p95, max) and this process's CPU time per call. On a busy machine the
 * wall times include waiting for a core; the CPU time does not, so it is the steadier of the two.
 */
async function time (label: string, run: () => unknown | Promise<unknown>): Promise<{ label: string, median: number, p95: number, max: number, cpu: number }> {
  for (let i = 0; i < Math.min(20, rounds); i++) await run()
  const samples: number[] = []
  const cpuBefore = process.cpuUsage()
  for (let i = 0; i < rounds; i++) {
    const started = performance.now()
    await run()
    samples.push(performance.now() - started)
  }
  const cpu = process.cpuUsage(cpuBefore)
  return { label, ...stats(samples), cpu: (cpu.user + cpu.system) / 1000 / rounds }
}

const dir = mkdtempSync(path.join(tmpdir(), 'history-bench-'))
try {
  const dbPath = path.join(dir, 'history.db')
  const store = createStore(dbPath)
  const big = batchEvents(1, BIG)
  const perSmall = batchEvents(0, SMALL).length
  const smallBatches = Math.max(0, Math.ceil((targetEvents - big.length) / perSmall))
  const writeStarted = performance.now()
  // The big batch in the middle of the history, so neither end of an index favours it.
  const order = [...Array.from({ length: Math.floor(smallBatches / 2) }, (_, i) => i + 2), 1,
    ...Array.from({ length: Math.ceil(smallBatches / 2) }, (_, i) => i + 2 + Math.floor(smallBatches / 2))]
  let clock = Date.UTC(2026, 0, 5)
  for (const batchId of order) {
    const events = batchId === 1 ? big : batchEvents(batchId, SMALL)
    for (let i = 0; i < events.length; i += 1000) {
      const chunk = events.slice(i, i + 1000).map(e => ({ ...e, payloadJson: JSON.stringify(e.payload) }))
      store.appendEvents(chunk, clock)
      clock += 1000
    }
  }
  const written = store.countEvents()
  const writeMs = performance.now() - writeStarted
  const detail = store.history.getBatchDetail(1, 0)!
  const listed = store.history.listBatches(20, 0)
  console.log(`database: ${written.toLocaleString('en')} events, ${listed.total} batches; batch 1 has ${detail.stories.length} stories and ${detail.stats.command_count.toLocaleString('en')} command runs (written in ${(writeMs / 1000).toFixed(1)} s)`)
  const rebuildStarted = performance.now()
  const replayed = store.history.rebuildFromEvents()
  console.log(`rebuild from events (what the upgrade migration does): ${replayed.toLocaleString('en')} events replayed in ${Math.round(performance.now() - rebuildStarted)} ms`)
  store.close()

  // The real service on the same file: the routes as a dashboard calls them.
  const app = Fastify({ logger: false })
  await app.register(sprintDashboard, { dbPath, artifactsDir: dir })
  await app.listen({ host: '127.0.0.1', port: 0 })
  const address = app.server.address()
  const base = typeof address === 'object' && address !== null ? `http://127.0.0.1:${address.port}` : ''
  const history = app.sprintStore.history
  const get = async (url: string): Promise<void> => {
    const response = await fetch(base + url)
    if (response.status !== 200) throw new Error(`${url}: ${response.status}`)
    await response.arrayBuffer()
  }

  const results = [
    await time('store: list 20 batches', () => history.listBatches(20, 0)),
    await time('store: read batch (200 stories, 2,000 runs)', () => history.getBatchDetail(1, 0)),
    await time('store: 500 events of the batch', () => history.getBatchEvents(1, 0, 500)),
    await time('store: command runs for the CSV', () => history.listCommandRuns(1)),
    await time('HTTP: GET /api/batches?limit=20', () => get('/api/batches?limit=20')),
    await time('HTTP: GET /api/batches/1', () => get('/api/batches/1')),
    await time('HTTP: GET /api/batches/1/events?limit=500', () => get('/api/batches/1/events?limit=500')),
    await time('HTTP: GET /api/batches/1/commands.csv', () => get('/api/batches/1/commands.csv'))
  ]
  await app.close()

  const width = Math.max(...results.map(r => r.label.length))
  console.log(`\n${'query'.padEnd(width)}  median      p95      max   cpu/call   (${rounds} rounds, ms; load average ${loadavg()[0]!.toFixed(1)} on ${cpus().length} cores)`)
  for (const r of results) {
    console.log(`${r.label.padEnd(width)}  ${r.median.toFixed(2).padStart(6)}  ${r.p95.toFixed(2).padStart(7)}  ${r.max.toFixed(2).padStart(7)}  ${r.cpu.toFixed(2).padStart(8)}`)
  }
  const target = results.filter(r => r.label.startsWith('store: list') || r.label.startsWith('store: read'))
  console.log(`\ntarget (issue 14): listing 20 batches and reading one batch each under 20 ms → ${target.every(r => r.median < 20) ? 'met' : 'NOT met'} (medians ${target.map(r => r.median.toFixed(2)).join(' / ')} ms)`)
} finally {
  rmSync(dir, { recursive: true, force: true })
}
