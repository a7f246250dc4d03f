import type { FastifyBaseLogger } from 'fastify'
import { WebSocket } from 'ws'
import { CloseCode } from '../events/protocol.ts'
import { sendFramed, textFrame } from './ws-frames.ts'
import { createBatchPacer } from './batch-pacer.ts'
import type { FanOutStats } from './stats.ts'

/** How long a socket closed as a slow consumer gets to finish the closing handshake before it is destroyed. */
const SLOW_CLOSE_GRACE_MS = 5000
/** How long `closeAll` waits for clients to answer the 1001 close frame before destroying their sockets. */
const SHUTDOWN_GRACE_MS = 2000
/** One connected WebSocket client as the fan-out and the heartbeat see it. */
export interface Client {
  socket: WebSocket
  /** The client asked for several events per frame (`?batch=1`). */
  batched: boolean
  lastPongAt: number
}

export interface FanOutOptions {
  /** A socket with more unsent bytes than this is closed with 1013 `slow consumer`. */
  maxBufferedBytes: number
  log: FastifyBaseLogger
  /** Milliseconds, monotonic, for the batch pacer; tests inject one. */
  now?: () => number
  /** Totals the fan-out adds to (deliveries, frames, slow-consumer closes); see src/lib/stats.ts. */
  stats: FanOutStats
}

/**
 * The client sets and the writes to them: every event goes to plain clients
 * one frame per event as soon as it is sent, and to batched clients with the
 * next batched write (at once, or after a hold when load calls for it: see
 * batch-pacer.ts), several events per frame. Each write is framed once and
 * the same bytes go to every socket. A client that is not keeping up is closed
 * with 1013 so it resumes with `since`; one whose write throws is terminated
 * for the same reason.
 */
export function createFanOut (options: FanOutOptions) {
  const { log, stats } = options
  const plainClients = new Set<Client>()
  const batchedClients = new Set<Client>()
  const setOf = (client: Client): Set<Client> => client.batched ? batchedClients : plainClients
  /** Events already sent to plain clients and waiting for the next batched write, oldest first. */
  let batchedPending: string[] = []
  let batchedTimer: NodeJS.Timeout | null = null
  /** Whether batched events wait, and how long: see batch-pacer.ts. */
  const pacer = createBatchPacer({ now: options.now })
  const slowCloseTimers = new Set<NodeJS.Timeout>()

  function remove (client: Client): void {
    setOf(client).delete(client)
  }

  function closeSlowConsumer (client: Client): void {
    remove(client)
    stats.slowConsumerCloses += 1
    log.warn({ bufferedAmount: client.socket.bufferedAmount }, 'closing slow WebSocket consumer')
    // The close frame queues behind what is already buffered, so a client that
    // resumes reading gets everything it was sent, then 1013, then resumes with `since`.
    client.socket.close(CloseCode.TRY_AGAIN_LATER, 'slow consumer')
    const timer = setTimeout(() => {
      slowCloseTimers.delete(timer)
      client.socket.terminate()
    }, SLOW_CLOSE_GRACE_MS)
    slowCloseTimers.add(timer)
    client.socket.once('close', () => {
      clearTimeout(timer)
      slowCloseTimers.delete(timer)
    })
  }

  /**
   * Writes events to every client of one kind that is open and keeping up:
   * plain clients one frame per event, batched clients all of them in one
   * frame. Framed once, when the first client that needs it comes up.
   */
  function write (clients: Set<Client>, jsons: readonly string[], oneFrame: boolean): void {
    if (clients.size === 0 || jsons.length === 0) return
    let framing: { framed: Buffer, payloads: Buffer[] } | undefined
    const frames = (): { framed: Buffer, payloads: Buffer[] } => {
      if (framing !== undefined) return framing
      if (oneFrame && jsons.length > 1) {
        const ndjson = Buffer.from(jsons.join('\n'))
        return (framing = { framed: textFrame(ndjson), payloads: [ndjson] })
      }
      const payloads = jsons.map(json => Buffer.from(json))
      return (framing = { framed: Buffer.concat(payloads.map(textFrame)), payloads })
    }
    let written = 0
    for (const client of clients) {
      const socket = client.socket
      if (socket.readyState !== WebSocket.OPEN) {
        remove(client)
        continue
      }
      if (socket.bufferedAmount > options.maxBufferedBytes) {
        closeSlowConsumer(client)
        continue
      }
      try {
        // Not awaited: a write completes when the kernel takes the bytes, and a
        // slow socket must never hold up the others.
        const { framed, payloads } = frames()
        sendFramed(socket, framed, payloads)
        written++
      } catch (err) {
        // Whatever broke the write, this client has now missed events: drop the connection
        // so that it reconnects and resumes with `since`, rather than stay open and silent.
        log.warn({ err }, 'WebSocket send failed; terminating the client so that it resumes')
        remove(client)
        socket.terminate()
      }
    }
    stats.eventsDelivered += written * jsons.length
    stats.framesWritten += written * (oneFrame ? 1 : jsons.length)
  }

  /** Writes everything pending to the batched clients, one frame each, and sets when the next write may start. */
  function writeBatched (): void {
    if (batchedTimer !== null) {
      clearTimeout(batchedTimer)
      batchedTimer = null
    }
    if (batchedPending.length === 0) return
    const jsons = batchedPending
    batchedPending = []
    const started = pacer.now()
    write(batchedClients, jsons, true)
    pacer.wrote(pacer.now() - started)
  }

  /**
   * Writes the batched clients' pending events now, or holds them when the pacer says the load
   * calls for it (one hold at a time; what arrives meanwhile joins the same frame).
   */
  function scheduleBatched (): void {
    if (batchedTimer !== null) {
      // Held: the frame grows, up to the pacer's bound.
      if (pacer.holdMs(batchedPending.length) === 0) writeBatched()
      return
    }
    const hold = pacer.holdMs(batchedPending.length)
    if (hold === 0) return writeBatched()
    const dueAt = pacer.now() + hold
    batchedTimer = setTimeout(() => {
      batchedTimer = null
      pacer.lagged(pacer.now() - dueAt)
      writeBatched()
    }, hold)
  }

  return {
    /** Sends events (envelope JSON, in id order) to plain clients now and to batched clients with the next batched write. */
    send (jsons: readonly string[]): void {
      if (jsons.length === 0) return
      write(plainClients, jsons, false)
      // With no batched client nothing waits: one that connects later starts from its init.
      if (batchedClients.size === 0) return
      for (const json of jsons) batchedPending.push(json)
      pacer.arrived(jsons.length)
      scheduleBatched()
    },

    /** Writes what waits for the batched clients now: before a new client's snapshot, and before shutdown. */
    flushBatched: writeBatched,

    /** Sends one message to every client at once, batched ones included, after what waits for them. */
    sendToAll (json: string): void {
      writeBatched()
      const payload = Buffer.from(json)
      const framed = textFrame(payload)
      for (const clients of [plainClients, batchedClients]) {
        for (const client of clients) {
          if (client.socket.readyState === WebSocket.OPEN) {
            sendFramed(client.socket, framed, [payload])
            stats.framesWritten += 1
          }
        }
      }
    },

    /** Starts sending to a client (its init must already be written). */
    add (client: Client): void {
      setOf(client).add(client)
      client.socket.once('close', () => remove(client))
    },

    remove,

    /** Whether the client still gets events (false once it closed, was closed or was dropped). */
    has (client: Client): boolean {
      return setOf(client).has(client)
    },

    /** Every client, plain ones first; a snapshot, safe to keep while clients come and go. */
    snapshot (): Client[] {
      return [...plainClients, ...batchedClients]
    },

    get size (): number {
      return plainClients.size + batchedClients.size
    },

    /** Tracked clients of each kind, for the metrics. */
    sizeByKind (): { plain: number, batched: number } {
      return { plain: plainClients.size, batched: batchedClients.size }
    },

    /** Closes every client with 1001 and waits (briefly) for them to go; used on shutdown. */
    async closeAll (): Promise<void> {
      // Everything sent so far goes out before the close frame.
      writeBatched()
      const sockets = [...plainClients, ...batchedClients].map(c => c.socket)
      plainClients.clear()
      batchedClients.clear()
      const closed = sockets.map(socket => new Promise<void>(resolve => {
        if (socket.readyState === WebSocket.CLOSED) return resolve()
        socket.once('close', () => resolve())
        socket.close(CloseCode.GOING_AWAY, 'server shutting down')
      }))
      let grace: NodeJS.Timeout | undefined
      await Promise.race([
        Promise.all(closed),
        new Promise<void>(resolve => { grace = setTimeout(resolve, SHUTDOWN_GRACE_MS) })
      ])
      clearTimeout(grace)
      for (const socket of sockets) socket.terminate()
    },

    /** Writes what waits and clears the timers. */
    stop (): void {
      writeBatched()
      for (const timer of slowCloseTimers) clearTimeout(timer)
      slowCloseTimers.clear()
    }
  }
}

export type FanOut = ReturnType<typeof createFanOut>
