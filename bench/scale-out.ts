/**
 * `npm run bench:scale-out`: what the Redis hop costs (issue #18), in one run.
 *
 * 1. Delivery latency: 1,000 batched clients (`?batch=1`, as the dashboard) at 200 events/s posted over
 *    HTTP, (a) all on one instance without Redis, (b) split 500/500 over two instances on one Redis
 *    stream. Rounds alternate a, b, a, b so that the machine's noise falls on both. Latency = receipt
 *    time in the client process − the time the producer stamped in the event (same clock).
 * 2. Emit throughput into the stream: 4 concurrent HTTP producers (keep-alive), as fast as answers come,
 *    one event per request and then 100 per request, over the two Redis instances; then one event per
 *    request with 4 requests in flight per producer; and the single instance for comparison.
 *
 * Options: --seconds N (measured window per round, default 10), --rounds N (default 2; 0 measures throughput only).
 * Everything runs on this machine: servers, Redis, clients and producers share its cores.
 */
import http from 'node:http'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { performance } from 'node:perf_hooks'
import { spawnBenchChild, type BenchChild } from './child-process.ts'
import type { CollectResult, ConnectResult } from './client-harness.ts'
import { mergeHistograms, summarise } from './latency-histogram.ts'
import { startServer, type ServerProcess } from '../test/e2e/server-process.ts'
import { startRedisServer } from '../test/fixtures/redis-server.ts'

const argument = (name: string, fallback: number): number => {
  const index = process.argv.indexOf(`--${name}`)
  return index === -1 ? fallback : Number(process.argv[index + 1])
}
const SECONDS = argument('seconds', 10)
const ROUNDS = argument('rounds', 2)
const CLIENTS = 1000
const RATE = 200
const WARMUP_MS = 2000

const agent = new http.Agent({ keepAlive: true, maxSockets: 16 })

/** POSTs a JSON body; resolves with the status. */
function post (url: string, body: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const request = http.request(`${url}/api/events`, { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, response => {
      response.resume()
      response.on('end', () => resolve(response.statusCode ?? 0))
    })
    request.on('error', reject)
    request.end(body)
  })
}

function progressBody (count = 1): string {
  const event = (): string => JSON.stringify({ type: 'command:progress', payload: { story_key: 'bench', command: 'dev-story', task_id: 'bench', message: String(performance.timeOrigin + performance.now()) } })
  return count === 1 ? event() : `[${Array.from({ length: count }, event).join(',')}]`
}

/** Posts `rate` events/s, spread over `urls` in turn, for `ms`. */
async function paced (urls: string[], rate: number, ms: number): Promise<{ sent: number, failed: number }> {
  const started = performance.now()
  let sent = 0
  let failed = 0
  const inFlight = new Set<Promise<void>>()
  while (performance.now() - started < ms) {
    const due = Math.floor((performance.now() - started) * rate / 1000)
    while (sent < due) {
      const url = urls[sent % urls.length]!
      sent++
      const request = post(url, progressBody()).then(status => { if (status !== 201) failed++ }, () => { failed++ })
      inFlight.add(request)
      request.finally(() => inFlight.delete(request)).catch(() => {})
    }
    await new Promise(resolve => setTimeout(resolve, 2))
  }
  await Promise.all(inFlight)
  return { sent, failed }
}

interface LatencyRound {
  mode: string
  p50: number
  p99: number
  delivered: number
  gaps: number
  duplicates: number
  histogram: string[]
}

async function latencyRound (mode: 'single' | 'redis', targets: ServerProcess[]): Promise<LatencyRound> {
  // Two client processes of 500 each: on the one instance, or one per instance.
  const harnesses: BenchChild[] = await Promise.all([0, 1].map(async () => await spawnBenchChild('client-harness.ts')))
  try {
    await Promise.all(harnesses.map(async (harness, index) => {
      const target = targets[index % targets.length]!
      const result = await harness.request<ConnectResult>('connect', { url: `${target.wsUrl}?batch=1`, count: CLIENTS / 2, concurrency: 50 })
      if (result.opened !== CLIENTS / 2) throw new Error(`${mode}: only ${result.opened} clients connected: ${result.errors.join('; ')}`)
    }))
    const urls = targets.map(target => target.url)
    await paced(urls, RATE, WARMUP_MS)
    await Promise.all(harnesses.map(async harness => await harness.request('reset')))
    const producer = await paced(urls, RATE, SECONDS * 1000)
    // The last events' frames arrive within a batching wait.
    await new Promise(resolve => setTimeout(resolve, 500))
    const results = await Promise.all(harnesses.map(async harness => await harness.request<CollectResult>('collect')))
    const histogram = results.map(result => result.histogram)
    const summary = summarise(mergeHistograms(histogram))
    if (producer.failed > 0) console.log(`  ${mode}: ${producer.failed} POSTs failed`)
    return {
      mode,
      p50: summary.p50,
      p99: summary.p99,
      delivered: results.reduce((sum, result) => sum + result.delivered, 0),
      gaps: results.reduce((sum, result) => sum + result.gaps, 0),
      duplicates: results.reduce((sum, result) => sum + result.duplicates, 0),
      histogram
    }
  } finally {
    await Promise.all(harnesses.map(async harness => {
      await harness.request('closeAll').catch(() => {})
      await harness.close()
    }))
  }
}

/** 4 producers, each with `depth` requests in flight (default one at a time), for `ms`; acknowledged events per second. */
async function throughput (urls: string[], perRequest: number, ms: number, depth = 1): Promise<{ eventsPerSecond: number, requestsPerSecond: number, failed: number }> {
  let events = 0
  let requests = 0
  let failed = 0
  const started = performance.now()
  await Promise.all(Array.from({ length: 4 * depth }, (_, lane) => lane % 4).map(async producer => {
    while (performance.now() - started < ms) {
      const status = await post(urls[producer % urls.length]!, progressBody(perRequest)).catch(() => 0)
      if (status === 201) {
        events += perRequest
        requests++
      } else failed++
    }
  }))
  const seconds = (performance.now() - started) / 1000
  return { eventsPerSecond: events / seconds, requestsPerSecond: requests / seconds, failed }
}

const fmt = (value: number): string => value.toFixed(2)

async function main (): Promise<void> {
  const dir = mkdtempSync(path.join(tmpdir(), 'sprint-bench-scale-out-'))
  const redis = await startRedisServer({ appendonly: true })
  const env = (name: string, extra: Record<string, string> = {}) => ({ SPRINT_DB: path.join(dir, `${name}.db`), SPRINT_ARTIFACTS_DIR: dir, SPRINT_WATCH: '0', LOG_LEVEL: 'info', ...extra })
  const servers: ServerProcess[] = []
  try {
    const single = await startServer(env('single'))
    servers.push(single)
    const pair = await Promise.all(['a', 'b'].map(async name => await startServer(env(name, { SPRINT_REDIS_URL: redis.url, SPRINT_REDIS_KEY: 'bench' }))))
    servers.push(...pair)
    console.log(`scale-out bench: ${CLIENTS} batched clients, ${RATE} events/s over HTTP, ${SECONDS} s windows, ${ROUNDS} round(s) each, alternating`)
    const rounds: LatencyRound[] = []
    for (let round = 0; round < ROUNDS; round++) {
      for (const [mode, targets] of [['single', [single]], ['redis', pair]] as const) {
        const result = await latencyRound(mode, [...targets])
        rounds.push(result)
        console.log(`  round ${round + 1} ${mode.padEnd(6)} p50 ${fmt(result.p50)} ms  p99 ${fmt(result.p99)} ms  delivered ${result.delivered}  gaps ${result.gaps}  duplicates ${result.duplicates}`)
      }
    }
    if (ROUNDS === 0) rounds.push({ mode: 'single', p50: 0, p99: 0, delivered: 0, gaps: 0, duplicates: 0, histogram: [] }, { mode: 'redis', p50: 0, p99: 0, delivered: 0, gaps: 0, duplicates: 0, histogram: [] })
    const pooled = (mode: string) => summarise(mergeHistograms(rounds.filter(round => round.mode === mode).flatMap(round => round.histogram)))
    const one = pooled('single')
    const two = pooled('redis')
    console.log(`  pooled single: p50 ${fmt(one.p50)} ms  p99 ${fmt(one.p99)} ms`)
    console.log(`  pooled redis (2 instances): p50 ${fmt(two.p50)} ms  p99 ${fmt(two.p99)} ms  (p99 ratio ${fmt(two.p99 / one.p99)}x)`)

    const urls = pair.map(server => server.url)
    for (const perRequest of [1, 100]) {
      const result = await throughput(urls, perRequest, SECONDS * 1000)
      console.log(`  emit throughput, 4 HTTP producers over 2 Redis instances, ${perRequest} event(s)/request: ${Math.round(result.eventsPerSecond)} events/s acknowledged (${Math.round(result.requestsPerSecond)} requests/s, ${result.failed} failed)`)
    }
    const deep = await throughput(urls, 1, SECONDS * 1000, 4)
    console.log(`  emit throughput, 4 HTTP producers with 4 requests in flight each, 1 event/request: ${Math.round(deep.eventsPerSecond)} events/s acknowledged (${deep.failed} failed)`)
    const local = await throughput([single.url], 1, SECONDS * 1000)
    console.log(`  for comparison, 4 HTTP producers into the single SQLite instance, 1 event/request: ${Math.round(local.eventsPerSecond)} events/s`)
  } finally {
    agent.destroy()
    await Promise.all(servers.map(async server => {
      server.child.kill('SIGTERM')
      await server.exited
    }))
    await redis.destroy()
    rmSync(dir, { recursive: true, force: true })
  }
}

await main()
