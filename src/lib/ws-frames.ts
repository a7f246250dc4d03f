import * as ws from 'ws'
import type { WebSocket } from 'ws'
import type { Socket } from 'node:net'

/**
 * Pre-framed fan-out: a turn's events are framed once (by `ws`'s own framer)
 * and the same bytes are written to every socket, one write per socket per
 * turn. `ws.send` would build a header and issue a cork/write/write/uncork per
 * event per socket; on the wire the two are identical.
 */

interface FrameOptions { fin: boolean, opcode: number, mask: boolean, readOnly: boolean, rsv1: boolean }
/** `ws` exports its Sender at runtime (`require('ws').Sender`) but @types/ws does not declare it. */
const Sender = (ws as unknown as { Sender?: { frame?: (data: Buffer, options: FrameOptions) => Buffer[] } }).Sender
// Without ws's framer no frame can be built, so fail at start-up, not on the first broadcast.
if (typeof Sender?.frame !== 'function') throw new Error('this version of ws has no Sender.frame; sprint-dashboard needs ws 8')
const frame = Sender.frame.bind(Sender)

const TEXT_FRAME: FrameOptions = { fin: true, opcode: 0x1, mask: false, readOnly: false, rsv1: false }

/** One complete, unmasked (server-to-client) text frame carrying `payload`. */
export function textFrame (payload: Buffer): Buffer {
  const parts = frame(payload, TEXT_FRAME)
  return parts.length === 1 ? parts[0]! : Buffer.concat(parts)
}

/** The parts of a `ws` WebSocket this module reads; all private, so every one is checked before use. */
interface WsInternals {
  _socket?: Socket | null
  _extensions?: Record<string, unknown>
  _sender?: { _state?: unknown } | null
}
/** `Sender`'s state when it is neither compressing nor reading a Blob, i.e. writes straight through. */
const SENDER_IDLE = 0

/**
 * The TCP socket when bytes written to it now land exactly where `ws.send`
 * would put them: the WebSocket is OPEN (not closing: nothing may follow a
 * close frame), nothing is queued inside `ws` (no permessage-deflate, no Blob
 * being read). Otherwise undefined, and the caller goes through `ws.send`, so
 * a `ws` whose private fields changed only costs speed.
 */
export function rawSocket (socket: WebSocket): Socket | undefined {
  if (socket.readyState !== socket.OPEN) return undefined
  const internals = socket as unknown as WsInternals
  const raw = internals._socket
  if (raw == null || !raw.writable || internals._sender?._state !== SENDER_IDLE) return undefined
  if (internals._extensions === undefined || Object.keys(internals._extensions).length > 0) return undefined
  return raw
}

/**
 * Writes `framed` (the frames of `payloads`, in order, built by `textFrame`)
 * to an open socket in one write; falls back to one `ws.send` per payload,
 * corked into one write, when `ws` must frame them itself.
 */
export function sendFramed (socket: WebSocket, framed: Buffer, payloads: readonly Buffer[]): void {
  const raw = rawSocket(socket)
  if (raw !== undefined) {
    raw.write(framed)
    return
  }
  const underlying = (socket as unknown as WsInternals)._socket
  underlying?.cork()
  try {
    for (const payload of payloads) socket.send(payload, { binary: false })
  } finally {
    underlying?.uncork()
  }
}
