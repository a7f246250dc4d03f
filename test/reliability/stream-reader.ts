import { WebSocket, type RawData } from 'ws'

/**
 * A WebSocket client that checks the event stream as it arrives: every id must
 * be the previous one plus one (gap-free, duplicate-free, ordered), starting
 * from its init. Ids are read from the start of each envelope without parsing
 * the rest, so hundreds of these can run in one test process.
 */
export class StreamReader {
  readonly socket: WebSocket
  /** Id of the last event applied; 0 before any. */
  lastId = 0
  /** Events applied, init replay included. */
  received = 0
  /** What went wrong, in words; empty when the stream was perfect. */
  readonly violations: string[] = []
  /** Close code and reason once closed. */
  closeCode: number | null = null
  closeReason = ''
  readonly opened: Promise<InitPayload>
  readonly closed: Promise<{ code: number, reason: string }>
  /** Called with each id as it is applied (after the checks). */
  onEvent: ((id: number, timestamp: number | null) => void) | null = null

  private initSeen = false

  /**
   * @param url `ws://…/ws`, without query; `since` and `batch` are added from the options.
   * @param since resume from this id (`?since=`); omitted means a fresh connect.
   */
  constructor (url: string, options: { since?: number, batched?: boolean, readTimestamps?: boolean } = {}) {
    const query = new URLSearchParams()
    if (options.since !== undefined) query.set('since', String(options.since))
    if (options.batched === true) query.set('batch', '1')
    const search = query.size > 0 ? `?${query.toString()}` : ''
    if (options.since !== undefined) this.lastId = options.since
    this.socket = new WebSocket(`${url}${search}`)
    const readTimestamps = options.readTimestamps === true
    let resolveOpened: (init: InitPayload) => void
    let rejectOpened: (err: Error) => void
    this.opened = new Promise((resolve, reject) => { resolveOpened = resolve; rejectOpened = reject })
    // A reader that closes before init and is never awaited is not an unhandled rejection.
    this.opened.catch(() => {})
    this.closed = new Promise(resolve => {
      this.socket.on('close', (code: number, reason: Buffer) => {
        this.closeCode = code
        this.closeReason = reason.toString()
        rejectOpened(new Error(`closed (${code}) before init`))
        resolve({ code, reason: this.closeReason })
      })
    })
    this.socket.on('error', () => { /* surfaces as 'close' */ })
    this.socket.on('message', (data: RawData) => {
      const text = (data as Buffer).toString()
      if (!this.initSeen) {
        this.initSeen = true
        const init = JSON.parse(text) as { type: string, payload: InitPayload }
        if (init.type !== 'init') this.violations.push(`first message is ${init.type}, not init`)
        this.applyInit(init.payload, options.since)
        resolveOpened(init.payload)
        return
      }
      let start = 0
      while (start < text.length) {
        const end = text.indexOf('\n', start)
        const line = end < 0 ? text.slice(start) : text.slice(start, end)
        start = end < 0 ? text.length : end + 1
        const id = /^\{"id":(\d+),/.exec(line)?.[1]
        if (id === undefined) {
          if (!line.startsWith('{"type":"pong"')) this.violations.push(`unexpected message ${line.slice(0, 80)}`)
          continue
        }
        const timestamp = readTimestamps ? Number(/"timestamp":(\d+)\}$/.exec(line)?.[1] ?? Number.NaN) : null
        this.apply(Number(id), timestamp)
      }
    })
  }

  private applyInit (payload: InitPayload, since: number | undefined): void {
    if (since !== undefined) {
      if (!payload.resumed || payload.reset) {
        this.violations.push(`resume from ${since} was not resumed (resumed=${payload.resumed}, reset=${payload.reset})`)
        // Rebuild from the snapshot, as a dashboard would, so later checks stay meaningful.
        this.lastId = (payload.events[0]?.id ?? 1) - 1
      }
    } else if (payload.events.length > 0) {
      this.lastId = payload.events[0]!.id - 1
    }
    for (const event of payload.events) this.apply(event.id, null)
  }

  private apply (id: number, timestamp: number | null): void {
    if (id !== this.lastId + 1 && this.violations.length < 20) {
      this.violations.push(id <= this.lastId ? `duplicate or out of order: ${id} after ${this.lastId}` : `gap: ${id} after ${this.lastId}`)
    }
    this.lastId = Math.max(this.lastId, id)
    this.received++
    this.onEvent?.(id, timestamp)
  }

  /** Pauses the TCP socket under the client: the server's writes pile up as if the client had stalled. */
  pauseReading (): void {
    (this.socket as unknown as { _socket: import('node:net').Socket })._socket.pause()
  }

  resumeReading (): void {
    (this.socket as unknown as { _socket: import('node:net').Socket })._socket.resume()
  }
}

export interface InitPayload {
  batch: unknown
  events: Array<{ id: number }>
  resumed: boolean
  reset: boolean
  error?: string
}

/** POSTs events to `/api/events`; resolves with the stored ids, or rejects with the status and body. */
export async function postEvents (url: string, events: Array<{ type: string, payload: unknown }>): Promise<number[]> {
  const response = await fetch(`${url}/api/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(events)
  })
  const text = await response.text()
  if (response.status !== 201) throw new Error(`POST /api/events answered ${response.status}: ${text.slice(0, 200)}`)
  return (JSON.parse(text) as { events: Array<{ id: number }> }).events.map(e => e.id)
}

/** A `command:progress` event whose message carries `sequence`, padded to about `size` bytes. */
export function progressEvent (sequence: number, size = 0): { type: string, payload: unknown } {
  const label = `event ${sequence}`
  return {
    type: 'command:progress',
    payload: { story_key: '2a-1', command: 'dev-story', task_id: 'implement', message: label.padEnd(Math.max(size, label.length), '.') }
  }
}
