import { randomUUID } from 'node:crypto'
import { Redis, type Result } from 'ioredis'
import type { FastifyBaseLogger } from 'fastify'
import type { BrokerState } from '../events/protocol.ts'

/** One event as the stream holds it: the payload stays JSON text, as in the SQLite store. */
export interface LogEntry {
  id: number
  type: string
  payload: string
  timestamp: number
}

/** An event on its way into the stream. */
export interface LogAppend {
  type: string
  payloadJson: string
  timestamp: number
  /** The producer's name for the event: one appended under it before (within IDEMPOTENCY_KEY_TTL_S) is not appended again. */
  idempotencyKey?: string | undefined
}

/**
 * What `append` did with one event: the id it got, or the id and timestamp of the event appended earlier under its
 * idempotency key (`duplicate`); `conflict` when that earlier event is another one (type or payload differ).
 */
export interface Appended {
  id: number
  duplicate: boolean
  conflict?: boolean
  /** With `duplicate`: the stored event's timestamp. */
  timestamp?: number
}

/** `append` with `atomic` refused the whole call: the event at `index` reuses the key of event `id`. */
export class AppendConflict extends Error {
  constructor (readonly index: number, readonly id: number) {
    super(`event ${index} reuses the idempotency key of event ${id}`)
  }
}

/**
 * How long Redis remembers an idempotency key (`<key>:ik:<idempotency key>`). A producer retries within seconds, or
 * when the service is back after an outage; an hour covers that. Each key costs Redis about 170 bytes, so a keyed
 * producer at 200 events/s keeps about 120 MB of keys, one at a few events/s a few MB.
 */
export const IDEMPOTENCY_KEY_TTL_S = 3600

/**
 * How far ids jump when a stream is started again (Redis restarted empty or replaced) while instances
 * still hold events: far above anything an instance applied, and above any `maxReplay`, so an id is never
 * given twice and no `since` from before the jump can be resumed across it.
 */
export const EPOCH_ID_GAP = 1_000_000

/** Entries one blocking read takes at most; the rest come with the next read, at once. */
const READ_COUNT = 1000
/** How long one XREAD blocks: bounded, so a closing instance never waits on a read that sees nothing. */
const READ_BLOCK_MS = 2000

/**
 * Starts a stream's epoch (a random id) if there is none, and moves the counter past `last` (the caller's
 * newest applied id) when the stream went back below it. Returns the epoch, the counter and whether it went back.
 * KEYS: stream counter, epoch. ARGV: last applied id, gap, new epoch id.
 */
const initScript = `
local epoch = redis.call('GET', KEYS[2])
local seq = tonumber(redis.call('GET', KEYS[1]) or '0')
local last = tonumber(ARGV[1])
local gap = tonumber(ARGV[2])
local wentBack = '0'
if not epoch then
  epoch = ARGV[3]
  redis.call('SET', KEYS[2], epoch)
  if not (seq == 0 and last == 0) and seq < last + gap then
    seq = last + gap
    redis.call('SET', KEYS[1], seq)
  end
elseif seq < last then
  wentBack = '1'
  seq = last + gap
  redis.call('SET', KEYS[1], seq)
end
return {epoch, tostring(seq), wentBack}
`

/**
 * Appends events in one atomic step: checks the epoch (a counter that vanished with a restarted Redis
 * must not start again at 1); looks up each event's idempotency key (kept per epoch as "<id> <timestamp>
 * <sha1 of type and payload>"): the same event under a known key is a retry (`=<id> <timestamp>`),
 * another event under it a conflict (`!<id>`: with `atomic`, the whole call is refused); every other
 * event takes the next id from the counter and is XADDed under it. The ids of one call are consecutive,
 * so a reader never sees a gap. Keys are set by name (`<key>:ik:<epoch>:...`): fine on one Redis, not
 * on a Cluster (which this does not support).
 * KEYS: stream, counter, epoch. ARGV: epoch, maxlen, key prefix, key TTL (s), atomic ('1'/'0'), then
 * type, payload, timestamp, idempotency key ('' for none) per event. Returns one answer per event.
 */
const appendScript = `
local epoch = redis.call('GET', KEYS[3])
if epoch ~= ARGV[1] then
  return redis.error_reply('SPRINT_EPOCH ' .. tostring(epoch))
end
local prefix = ARGV[3] .. ARGV[1] .. ':'
local n = (#ARGV - 5) / 4
local state, kinds, fps = {}, {}, {}
for i = 1, n do
  local a = 5 + (i - 1) * 4
  local k = ARGV[a + 4]
  kinds[i] = 'new'
  if k ~= '' then
    fps[i] = redis.sha1hex(ARGV[a + 1] .. '\\n' .. ARGV[a + 2])
    if state[k] == nil then
      state[k] = false
      local stored = redis.call('GET', prefix .. k)
      if stored then
        local id, ts, fp = string.match(stored, '^(%d+) (%d+) (%x+)$')
        if id then state[k] = { id = id, ts = ts, fp = fp } end
      end
    end
    local s = state[k]
    if s then
      if s.fp == fps[i] then kinds[i] = 'dup' else kinds[i] = 'conflict' end
      if kinds[i] == 'conflict' and ARGV[5] == '1' then
        return redis.error_reply('SPRINT_IDEMPOTENCY_CONFLICT ' .. (i - 1) .. ' ' .. (s.id or 0))
      end
    else
      state[k] = { fp = fps[i] }
    end
  end
end
local out = {}
for i = 1, n do
  local a = 5 + (i - 1) * 4
  local k = ARGV[a + 4]
  if kinds[i] == 'dup' then
    out[i] = '=' .. state[k].id .. ' ' .. state[k].ts
  elseif kinds[i] == 'conflict' then
    out[i] = '!' .. state[k].id
  else
    local id = tostring(redis.call('INCR', KEYS[2]))
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], id .. '-0', 't', ARGV[a + 1], 'p', ARGV[a + 2], 'ts', ARGV[a + 3])
    if k ~= '' then
      redis.call('SET', prefix .. k, id .. ' ' .. ARGV[a + 3] .. ' ' .. fps[i], 'EX', ARGV[4])
      state[k] = { id = id, ts = ARGV[a + 3], fp = fps[i] }
    end
    out[i] = id
  end
end
return out
`

declare module 'ioredis' {
  interface RedisCommander<Context> {
    sprintInit (counter: string, epoch: string, last: number, gap: number, newEpoch: string): Result<[string, string, string], Context>
    sprintAppend (stream: string, counter: string, epoch: string, ...args: Array<string | number>): Result<string[], Context>
  }
}

type StreamEntries = Array<[string, string[]]>

/** One answer of the append script: `<id>`, `=<id> <timestamp>` (a retry) or `!<id>` (a conflict). */
function parseAppended (answer: string): Appended {
  if (answer.startsWith('!')) return { id: Number(answer.slice(1)), duplicate: true, conflict: true }
  if (!answer.startsWith('=')) return { id: Number(answer), duplicate: false }
  const [id, timestamp] = answer.slice(1).split(' ')
  return { id: Number(id), duplicate: true, timestamp: Number(timestamp) }
}

function toEntry ([streamId, fields]: [string, string[]]): LogEntry {
  const entry: LogEntry = { id: Number.parseInt(streamId, 10), type: '', payload: 'null', timestamp: 0 }
  for (let i = 0; i < fields.length; i += 2) {
    const value = fields[i + 1]!
    if (fields[i] === 't') entry.type = value
    else if (fields[i] === 'p') entry.payload = value
    else if (fields[i] === 'ts') entry.timestamp = Number(value)
  }
  return entry
}

export interface RedisLogOptions {
  url: string
  /** Prefix of the keys: `<key>:stream`, `<key>:seq`, `<key>:epoch`. */
  key: string
  /** The stream is trimmed to about this many events. */
  retainEvents: number
  log: FastifyBaseLogger
  /** The newest id this instance applied: reads continue after it, a new epoch starts above it. */
  lastApplied: () => number
  /** Entries read from the stream, in stream order. Called synchronously, one read at a time. */
  onEntries: (entries: LogEntry[]) => void
  /** The stream went back (Redis restarted empty or replaced): what this instance holds is from another log. */
  onReset: (reason: string) => void
  onState: (state: BrokerState) => void
}

/**
 * The log of record on a Redis stream: `append` assigns ids atomically in Redis (so every instance sees
 * the same ids in the same order), and a reader on its own connection hands every entry, in order, to
 * `onEntries`. Redis unreachable: `append` rejects at once (no offline queue) and the reader resumes after
 * `lastApplied()` when Redis is back.
 *
 * @example
 * const log = createRedisLog({ url: 'redis://127.0.0.1:6379', key: 'sprint-dashboard', retainEvents: 100_000, log: app.log,
 *   lastApplied: () => store.getLastEventId(), onEntries: apply, onReset: reset, onState: state => {} })
 * const [{ id }] = await log.append([{ type: 'batch:start', payloadJson: '{"batch_id":1,"max_cycles":2}', timestamp: Date.now() }])
 */
export function createRedisLog (options: RedisLogOptions) {
  const retainEvents = options.retainEvents
  // Idempotency keys are `<key>:ik:<epoch>:<idempotency key>`: a new epoch (a new log) never answers with an old id.
  const keys = { stream: `${options.key}:stream`, counter: `${options.key}:seq`, epoch: `${options.key}:epoch`, idempotency: `${options.key}:ik:` }
  const common = {
    // Fail fast: a command while Redis is away is refused now, not queued for a reconnect that may not come.
    enableOfflineQueue: false,
    // A command in flight when the connection drops is failed rather than sent again: the caller decides.
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
    // Soon back after a short outage (a Redis restart), without hammering a long one.
    retryStrategy: (attempt: number) => Math.min(50 * attempt, 500),
    lazyConnect: true
  }
  const writer = new Redis(options.url, { ...common, commandTimeout: 5000, connectionName: 'sprint-dashboard-writer' })
  const reader = new Redis(options.url, { ...common, connectionName: 'sprint-dashboard-reader' })
  writer.defineCommand('sprintInit', { numberOfKeys: 2, lua: initScript })
  writer.defineCommand('sprintAppend', { numberOfKeys: 3, lua: appendScript })

  let epoch: string | null = null
  let state: BrokerState = 'down'
  let newest = 0
  let closed = false
  let reading: Promise<void> | null = null
  let wakeReader: (() => void) | null = null

  function setState (next: BrokerState): void {
    if (next === state) return
    state = next
    options.onState(next)
  }

  /** Learns the stream's epoch (starting one if needed); a different epoch than before means the log went back. */
  async function init (): Promise<void> {
    const last = options.lastApplied()
    const [current, seq, wentBack] = await writer.sprintInit(keys.counter, keys.epoch, last, EPOCH_ID_GAP, randomUUID())
    newest = Math.max(newest, Number(seq))
    const previous = epoch
    epoch = current
    // On a first start there is nothing to compare: a stream that does not continue what this instance
    // holds shows as a jump in ids, which the reader's caller sees.
    if (previous !== null && current !== previous) options.onReset(`the stream's epoch changed (${previous} -> ${current})`)
    else if (wentBack === '1') options.onReset(`the stream's counter is below the last applied id ${last}`)
  }

  writer.on('ready', () => {
    init().then(() => {
      setState('up')
      wakeReader?.()
    }, (err: unknown) => {
      options.log.error({ err }, 'Redis: could not read the stream epoch')
    })
  })
  writer.on('close', () => setState('down'))
  // ioredis reconnects by itself; the error is logged once per outage by the state change, not per attempt.
  writer.on('error', (err: Error) => { options.log.debug({ err }, 'Redis writer connection error') })
  reader.on('error', (err: Error) => { options.log.debug({ err }, 'Redis reader connection error') })
  reader.on('ready', () => wakeReader?.())

  async function readLoop (): Promise<void> {
    for (;;) {
      if (closed) return
      if (state !== 'up' || reader.status !== 'ready') {
        await new Promise<void>(resolve => {
          wakeReader = resolve
          // Checks again now and then: the writer's and the reader's reconnects are not ordered.
          setTimeout(resolve, 200).unref()
        })
        wakeReader = null
        continue
      }
      let answer: Array<[string, StreamEntries]> | null
      try {
        answer = await reader.xread('COUNT', READ_COUNT, 'BLOCK', READ_BLOCK_MS, 'STREAMS', keys.stream, `${options.lastApplied()}-0`) as Array<[string, StreamEntries]> | null
      } catch (err) {
        if (!closed) options.log.debug({ err }, 'Redis: stream read failed; retrying from the last applied id')
        continue
      }
      if (closed || answer === null || answer.length === 0) continue
      const entries = answer[0]![1].map(toEntry)
      if (entries.length === 0) continue
      newest = Math.max(newest, entries.at(-1)!.id)
      try {
        options.onEntries(entries)
      } catch (err) {
        // Nothing was applied (one transaction): the next read takes the same entries again.
        options.log.error({ err }, 'applying events from the stream failed; retrying')
        await new Promise(resolve => setTimeout(resolve, 500).unref())
      }
    }
  }

  return {
    /** Connects both connections and starts reading. Resolves even when Redis is down: it is retried. */
    async start (): Promise<void> {
      await Promise.allSettled([writer.connect(), reader.connect()])
      if (writer.status === 'ready' && state === 'down') {
        try {
          await init()
          setState('up')
        } catch (err) {
          options.log.error({ err }, 'Redis: could not read the stream epoch')
        }
      }
      reading = readLoop()
    },

    /**
     * Appends events in one script call and resolves to one `Appended` per event, in order: its new id, or
     * for an idempotency key appended before (same type and payload) that event's id and timestamp, marked
     * `duplicate`; a key that names another event is marked `conflict` and not appended, or, with `atomic`
     * (an array that is stored whole or not at all), refuses the call with `AppendConflict`. Rejects when
     * Redis is unreachable or the call fails; then nothing was appended, except for a call in flight at
     * the moment the connection dropped, whose outcome cannot be known (a retry with the same keys settles it).
     */
    async append (events: readonly LogAppend[], options: { atomic?: boolean } = {}): Promise<Appended[]> {
      const args: Array<string | number> = [keys.idempotency, IDEMPOTENCY_KEY_TTL_S, options.atomic === true ? '1' : '0']
      for (const event of events) args.push(event.type, event.payloadJson, event.timestamp, event.idempotencyKey ?? '')
      for (let attempt = 0; ; attempt++) {
        if (epoch === null) await init()
        try {
          const answer = await writer.sprintAppend(keys.stream, keys.counter, keys.epoch, epoch!, retainEvents, ...args)
          const appended = answer.map(parseAppended)
          for (const { id, duplicate } of appended) if (!duplicate) newest = Math.max(newest, id)
          return appended
        } catch (err) {
          const conflict = /SPRINT_IDEMPOTENCY_CONFLICT (\d+) (\d+)/.exec(String((err as Error).message))
          if (conflict !== null) throw new AppendConflict(Number(conflict[1]), Number(conflict[2]))
          // Another epoch (Redis restarted empty, or another instance started one): learn it and try once more.
          if (attempt === 0 && String((err as Error).message).includes('SPRINT_EPOCH')) {
            await init()
            continue
          }
          throw err
        }
      }
    },

    /** Entries with ids from `fromId` to `toId`, at most `count`, oldest first (XRANGE). */
    async range (fromId: number, toId: number, count: number): Promise<LogEntry[]> {
      const entries = await writer.xrange(keys.stream, `${fromId}-0`, `${toId}-0`, 'COUNT', count)
      return entries.map(toEntry)
    },

    get state (): BrokerState {
      return state
    },

    /** The newest id this instance knows the stream holds (from its reads and its own appends). */
    get newestId (): number {
      return newest
    },

    /** Stops reading and closes both connections. */
    async close (): Promise<void> {
      closed = true
      wakeReader?.()
      reader.disconnect()
      await writer.quit().catch(() => writer.disconnect())
      await reading
    }
  }
}

export type RedisLog = ReturnType<typeof createRedisLog>
