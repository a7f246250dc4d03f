/**
 * Soak: `npm run soak -- [--seconds 300] [--clients 500] [--rate 200] [--drop 0.1] [--drop-every 3] [--seed 1]`
 *
 * Starts the standalone server as a child process on 127.0.0.1 with a fresh
 * database, holds `clients` WebSocket clients (nine in ten with `batch=1`, as
 * the dashboard connects), emits `rate` events per second over HTTP, and every
 * `drop-every` seconds drops a `drop` fraction of the clients (half abruptly,
 * half with a clean close) and reconnects them with `?since=<last id applied>`.
 * At the end every client's stream, init replays and live events across all
 * its sessions, must be gap-free, duplicate-free and ordered, and must reach
 * the last event. Prints the server's RSS at start, peak and end.
 *
 * Bounded: loopback only, at most 5,000 clients and 5,000 events/s, a hard
 * deadline of the duration plus two minutes. Exits 0 when every check holds,
 * 1 on any violation, 2 on a crash or the deadline.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { startServer, type ServerProcess } from '../e2e/server-process.ts'
import { MiB, readRss, trackRss } from '../reliability/wire.ts'
import { postEvents, progressEvent, StreamReader } from '../reliability/stream-reader.ts'

export interface SoakOptions {
  seconds: number
  clients: number
  /** Events per second, emitted over HTTP. */
  rate: number
  /** Fraction of the clients dropped and resumed each round. */
  dropFraction: number
  dropEverySeconds: number
  /** Seed of the generator that picks who drops and how long each waits before resuming. */
  seed: number
  /** Progress lines; silent when omitted. */
  log?: (line: string) => void
}

export const defaultSoakOptions: SoakOptions = { seconds: 300, clients: 500, rate: 200, dropFraction: 0.1, dropEverySeconds: 3, seed: 1 }

export interface SoakResult {
  ok: boolean
  violations: string[]
  options: Omit<SoakOptions, 'log'>
  durationMs: number
  events: number
  lastEventId: number
  /** Event deliveries checked, summed over clients (init replays included). */
  deliveries: number
  reconnects: { abrupt: number, clean: number }
  /** ms from the server storing an event to a client reading it, live events of every tenth client. */
  latencyMs: { p50: number, p99: number, max: number }
  rssMiB: { start: number, peak: number, end: number }
  serverExitCode: number | string
}

/** mulberry32: a small seeded generator, so a failing run can be repeated. */
function random (seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let x = state
    x = Math.imul(x ^ (x >>> 15), x | 1)
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61)
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

const sleep = async (ms: number): Promise<void> => await new Promise(resolve => setTimeout(resolve, ms))

/** Counts latencies in 1 ms buckets up to 60 s; percentiles without keeping every sample. */
class LatencyCounter {
  private readonly buckets = new Uint32Array(60_001)
  private count = 0
  max = 0
  record (ms: number): void {
    const bucket = Math.min(Math.max(0, Math.round(ms)), 60_000)
    this.buckets[bucket]!++
    this.count++
    this.max = Math.max(this.max, ms)
  }

  percentile (p: number): number {
    const rank = Math.ceil(this.count * p)
    let seen = 0
    for (let ms = 0; ms < this.buckets.length; ms++) {
      seen += this.buckets[ms]!
      if (seen >= rank && rank > 0) return ms
    }
    return 0
  }
}

/** One dashboard: a run of WebSocket sessions, each resuming where the last one stopped. */
class SoakClient {
  reader!: StreamReader
  readonly sessions: StreamReader[] = []
  readonly violations: string[] = []
  busy = false
  private expectingClose = false

  constructor (
    readonly index: number,
    private readonly url: string,
    private readonly batched: boolean,
    private readonly latency: LatencyCounter | null,
    private readonly stopping: () => boolean
  ) {}

  async open (since?: number): Promise<void> {
    const reader = new StreamReader(this.url, { since, batched: this.batched, readTimestamps: this.latency !== null })
    this.reader = reader
    this.sessions.push(reader)
    if (this.latency !== null) {
      const latency = this.latency
      reader.onEvent = (_id, timestamp) => { if (timestamp !== null) latency.record(Date.now() - timestamp) }
    }
    // resume() never rejects, so this chain needs no catch.
    reader.closed.then(async ({ code, reason }) => {
      if (this.expectingClose || this.stopping()) return
      // The server closed it (heartbeat, slow consumer, ...): a finding, then resume as the dashboard would.
      this.violations.push(`client ${this.index}: closed by the server with ${code} ${reason}`)
      if (this.violations.length > 20) return // the server is gone or refusing: stop retrying, the run has failed
      this.busy = true
      await this.resume(reader.lastId)
      this.busy = false
    })
    await reader.opened
  }

  /** Opens the next session; a session that cannot open is a finding, not a crash of the run. */
  private async resume (since: number): Promise<void> {
    try {
      await this.open(since)
    } catch (err) {
      this.violations.push(`client ${this.index}: could not resume from ${since}: ${(err as Error).message}`)
    }
  }

  async dropAndResume (abrupt: boolean, pauseMs: number): Promise<void> {
    this.busy = true
    this.expectingClose = true
    const reader = this.reader
    if (abrupt) reader.socket.terminate()
    else reader.socket.close(1000, 'soak')
    // Messages still arriving during a clean close are applied; resume from what was applied.
    await reader.closed
    this.expectingClose = false
    await sleep(pauseMs)
    await this.resume(reader.lastId)
    this.busy = false
  }

  get lastId (): number {
    return this.reader.lastId
  }

  get deliveries (): number {
    return this.sessions.reduce((sum, session) => sum + session.received, 0)
  }

  allViolations (): string[] {
    return [...this.violations, ...this.sessions.flatMap((session, n) => session.violations.map(v => `client ${this.index} session ${n}: ${v}`))]
  }
}

export async function runSoak (input: Partial<SoakOptions> = {}): Promise<SoakResult> {
  const options = { ...defaultSoakOptions, ...input }
  const log = options.log ?? (() => {})
  const { log: _log, ...reported } = options
  if (!(options.clients >= 1 && options.clients <= 5000)) throw new Error('--clients must be between 1 and 5000')
  if (!(options.rate >= 1 && options.rate <= 5000)) throw new Error('--rate must be between 1 and 5000')
  if (!(options.seconds >= 1 && options.seconds <= 86_400)) throw new Error('--seconds must be between 1 and 86400')
  if (!(options.dropFraction >= 0 && options.dropFraction <= 1)) throw new Error('--drop must be between 0 and 1')
  if (!(options.dropEverySeconds > 0)) throw new Error('--drop-every must be positive')

  const next = random(options.seed)
  const dir = await mkdtemp(path.join(tmpdir(), 'sprint-soak-'))
  let server: ServerProcess | null = null
  const clients: SoakClient[] = []
  let stopping = false
  try {
    server = await startServer({ SPRINT_DB: path.join(dir, 'soak.db'), SPRINT_ARTIFACTS_DIR: dir, SPRINT_WATCH: '0' })
    const { url, wsUrl } = server
    const pid = server.child.pid!
    const latency = new LatencyCounter()

    for (let i = 0; i < options.clients; i += 50) {
      const group = Array.from({ length: Math.min(50, options.clients - i) }, (_, k) => {
        const index = i + k
        return new SoakClient(index, wsUrl, index % 10 !== 0, index % 10 === 5 ? latency : null, () => stopping)
      })
      clients.push(...group)
      await Promise.all(group.map(client => client.open()))
    }
    const rssStart = await readRss(pid)
    const rss = trackRss(pid, 250)
    log(`soak: ${clients.length} clients connected; server RSS ${(rssStart / MiB).toFixed(1)} MiB; ` +
      `emitting ${options.rate} events/s for ${options.seconds} s`)

    const startedAt = performance.now()
    const elapsed = (): number => performance.now() - startedAt
    const durationMs = options.seconds * 1000
    let sequence = 0
    let lastAckedId = 0
    const reconnects = { abrupt: 0, clean: 0 }
    const resumes: Array<Promise<void>> = []

    const emitter = (async () => {
      while (elapsed() < durationMs) {
        const due = Math.min(1000, Math.floor(elapsed() * options.rate / 1000) - sequence)
        if (due > 0) {
          const ids = await postEvents(url, Array.from({ length: due }, () => progressEvent(++sequence, 120)))
          lastAckedId = ids.at(-1)!
        }
        await sleep(50)
      }
      // The last tick's share, so that a run emits exactly rate × seconds events.
      const rest = options.rate * options.seconds - sequence
      for (let sent = 0; sent < rest; sent += 1000) {
        const ids = await postEvents(url, Array.from({ length: Math.min(1000, rest - sent) }, () => progressEvent(++sequence, 120)))
        lastAckedId = ids.at(-1)!
      }
    })()

    const dropper = (async () => {
      let round = 0
      while (elapsed() + options.dropEverySeconds * 1000 < durationMs) {
        await sleep(options.dropEverySeconds * 1000)
        round++
        const idle = clients.filter(client => !client.busy)
        const count = Math.min(idle.length, Math.round(clients.length * options.dropFraction))
        for (let n = 0; n < count; n++) {
          const [client] = idle.splice(Math.floor(next() * idle.length), 1)
          const abrupt = next() < 0.5
          if (abrupt) reconnects.abrupt++
          else reconnects.clean++
          resumes.push(client!.dropAndResume(abrupt, Math.floor(next() * 500)))
        }
        if (round % Math.max(1, Math.round(30 / options.dropEverySeconds)) === 0) {
          log(`soak: ${(elapsed() / 1000).toFixed(0)} s, ${sequence} events, ${reconnects.abrupt + reconnects.clean} resumes, ` +
            `server RSS ${(rss.peak / MiB).toFixed(1)} MiB peak`)
        }
      }
    })()

    await Promise.all([emitter, dropper])
    await Promise.all(resumes)
    const health = await (await fetch(`${url}/api/health`)).json() as { lastEventId: number, clients: number }
    const violations: string[] = []
    if (health.lastEventId !== sequence || lastAckedId !== sequence) {
      violations.push(`server's last id ${health.lastEventId}, last acknowledged ${lastAckedId}, events sent ${sequence}`)
    }
    // Let every client drain to the last event, however far behind it is.
    const drainDeadline = Date.now() + 60_000
    while (clients.some(client => client.lastId < lastAckedId || client.busy) && Date.now() < drainDeadline) await sleep(20)
    stopping = true
    const rssPeak = Math.max(await rss.stop(), rssStart)
    const rssEnd = await readRss(pid)

    for (const client of clients) {
      violations.push(...client.allViolations())
      if (client.lastId !== lastAckedId) violations.push(`client ${client.index}: ended at id ${client.lastId}, not ${lastAckedId}`)
    }
    const deliveries = clients.reduce((sum, client) => sum + client.deliveries, 0)
    for (const client of clients) client.reader.socket.terminate()
    const exited = server.exited
    server.child.kill('SIGTERM')
    const serverExitCode = await exited
    if (serverExitCode !== 0) violations.push(`server exited with ${serverExitCode}`)

    return {
      ok: violations.length === 0,
      violations: violations.slice(0, 100),
      options: reported,
      durationMs: Math.round(elapsed()),
      events: sequence,
      lastEventId: health.lastEventId,
      deliveries,
      reconnects,
      latencyMs: { p50: latency.percentile(0.5), p99: latency.percentile(0.99), max: Math.round(latency.max) },
      rssMiB: { start: round1(rssStart / MiB), peak: round1(rssPeak / MiB), end: round1(rssEnd / MiB) },
      serverExitCode
    }
  } finally {
    stopping = true
    for (const client of clients) client.reader?.socket.terminate()
    server?.child.kill('SIGKILL')
    await rm(dir, { recursive: true, force: true })
  }
}

const round1 = (value: number): number => Math.round(value * 10) / 10

/** The report as printed by `npm run soak`. */
export function formatSoakResult (result: SoakResult): string {
  const o = result.options
  return [
    `soak: ${o.clients} clients (${Math.ceil(o.clients / 10)} unbatched), ${Math.round(o.dropFraction * 100)}% dropped and resumed every ${o.dropEverySeconds} s, ` +
      `${o.rate} events/s for ${o.seconds} s (seed ${o.seed})`,
    `events emitted: ${result.events} (last id ${result.lastEventId}); deliveries checked: ${result.deliveries}`,
    `resumes: ${result.reconnects.abrupt + result.reconnects.clean} (${result.reconnects.abrupt} abrupt, ${result.reconnects.clean} clean)`,
    `delivery latency (live, every tenth client): p50 ${result.latencyMs.p50} ms, p99 ${result.latencyMs.p99} ms, max ${result.latencyMs.max} ms`,
    `server RSS: start ${result.rssMiB.start} MiB, peak ${result.rssMiB.peak} MiB, end ${result.rssMiB.end} MiB`,
    `server exit code after SIGTERM: ${result.serverExitCode}`,
    result.ok
      ? 'verdict: OK: every stream gap-free, duplicate-free, ordered and complete'
      : `verdict: FAILED, ${result.violations.length} violation(s):\n  ${result.violations.slice(0, 20).join('\n  ')}`
  ].join('\n')
}

function parseArguments (argv: string[]): Partial<SoakOptions> {
  const names: Record<string, keyof SoakOptions> = {
    '--seconds': 'seconds', '--clients': 'clients', '--rate': 'rate', '--drop': 'dropFraction', '--drop-every': 'dropEverySeconds', '--seed': 'seed'
  }
  const parsed: Partial<SoakOptions> = {}
  for (let i = 0; i < argv.length; i += 2) {
    const key = names[argv[i]!]
    const value = Number(argv[i + 1])
    if (key === undefined || argv[i + 1] === undefined || !Number.isFinite(value)) {
      throw new Error(`unknown or incomplete argument ${argv[i]}; use ${Object.keys(names).join(', ')} followed by a number`)
    }
    (parsed as Record<string, number>)[key] = value
  }
  return parsed
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  let options: Partial<SoakOptions>
  try {
    options = parseArguments(process.argv.slice(2))
  } catch (err) {
    console.error((err as Error).message)
    process.exit(2)
  }
  const seconds = options.seconds ?? defaultSoakOptions.seconds
  const deadline = setTimeout(() => {
    console.error(`soak: not finished within ${seconds + 120} s; giving up`)
    process.exit(2)
  }, (seconds + 120) * 1000)
  deadline.unref()
  runSoak({ ...options, log: line => console.error(line) }).then(result => {
    console.log(formatSoakResult(result))
    console.log(JSON.stringify(result))
    process.exit(result.ok ? 0 : 1)
  }, (err: unknown) => {
    console.error('soak: crashed', err)
    process.exit(2)
  })
}
