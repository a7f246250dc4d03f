import net from 'node:net'
import { readFile } from 'node:fs/promises'

/**
 * Raw HTTP and WebSocket bytes for the reliability tests: client libraries
 * normalise paths and refuse to send broken frames, which is exactly what the
 * tests need to send.
 */

export interface RawResponse {
  status: number
  headers: string
  body: string
}

/** Sends `request` bytes as they are to 127.0.0.1:`port` and reads until the server closes. */
export async function rawHttp (port: number, request: string | Buffer, timeoutMs = 10_000): Promise<RawResponse> {
  return await new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    const socket = net.connect(port, '127.0.0.1', () => socket.write(request))
    const timer = setTimeout(() => {
      socket.destroy()
      reject(new Error(`no complete response within ${timeoutMs} ms`))
    }, timeoutMs)
    socket.on('data', chunk => chunks.push(chunk))
    socket.on('error', () => { /* a reset after the response still counts as the end */ })
    socket.on('close', () => {
      clearTimeout(timer)
      const data = Buffer.concat(chunks).toString('latin1')
      const split = data.indexOf('\r\n\r\n')
      resolve({
        status: Number(/^HTTP\/1\.1 (\d{3})/.exec(data)?.[1] ?? 0),
        headers: split < 0 ? data : data.slice(0, split),
        body: split < 0 ? '' : data.slice(split + 4)
      })
    })
  })
}

/** A GET with the request target written exactly as given. */
export async function rawGet (port: number, target: string): Promise<RawResponse> {
  return await rawHttp(port, `GET ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`)
}

export interface FrameOptions {
  fin?: boolean
  /** Client frames must be masked; `false` sends an unmasked one. */
  mask?: boolean
  rsv1?: boolean
  /** Writes this length in the header instead of the payload's own (for "huge frame" headers). */
  declaredLength?: bigint
}

export const Opcode = { CONTINUATION: 0x0, TEXT: 0x1, BINARY: 0x2, RESERVED: 0x3, CLOSE: 0x8, PING: 0x9, PONG: 0xa } as const

/**
 * One WebSocket frame (RFC 6455 §5.2) as a client would send it, including the
 * broken ones `ws` refuses to build. The mask key is all zeros, so the payload
 * bytes go out as they are.
 */
export function frame (opcode: number, payload: Buffer | string, options: FrameOptions = {}): Buffer {
  const { fin = true, mask = true, rsv1 = false } = options
  const body = typeof payload === 'string' ? Buffer.from(payload) : payload
  const length = options.declaredLength ?? BigInt(body.length)
  const first = (fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | opcode
  const maskBit = mask ? 0x80 : 0
  let header: Buffer
  if (length < 126n) {
    header = Buffer.from([first, maskBit | Number(length)])
  } else if (length < 65_536n) {
    header = Buffer.alloc(4)
    header[0] = first
    header[1] = maskBit | 126
    header.writeUInt16BE(Number(length), 2)
  } else {
    header = Buffer.alloc(10)
    header[0] = first
    header[1] = maskBit | 127
    header.writeBigUInt64BE(length, 2)
  }
  return Buffer.concat([header, mask ? Buffer.alloc(4) : Buffer.alloc(0), body])
}

/** Resident set size of a process in bytes, from /proc (Linux). */
export async function readRss (pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  const kib = /^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1]
  if (kib === undefined) throw new Error(`no VmRSS for process ${pid}`)
  return Number(kib) * 1024
}

/** Samples a process's RSS every `intervalMs` and keeps the peak; `stop()` ends sampling. */
export function trackRss (pid: number, intervalMs = 50): { readonly peak: number, stop: () => Promise<number> } {
  let peak = 0
  const state = { stopped: false }
  const sample = async (): Promise<void> => {
    try {
      peak = Math.max(peak, await readRss(pid))
    } catch {
      state.stopped = true // the process is gone
    }
  }
  const loop = (async () => {
    while (!state.stopped) {
      await sample()
      await new Promise(resolve => setTimeout(resolve, intervalMs))
    }
  })()
  return {
    get peak () { return peak },
    async stop () {
      state.stopped = true
      await loop
      return peak
    }
  }
}

export const MiB = 1024 * 1024
