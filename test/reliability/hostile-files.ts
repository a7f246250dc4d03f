import { execFileSync } from 'node:child_process'
import { constants } from 'node:fs'
import { open, rm } from 'node:fs/promises'
import type { TestContext } from '../helper.ts'

/**
 * Files an agent can leave in the artifacts directory that are not plain files: FIFOs (named pipes)
 * and links to devices. A FIFO opened for reading blocks until a writer comes; these helpers make one
 * and, at teardown, release any reader still blocked on it, so a failing test still ends.
 */

/** Makes a FIFO at `file` (mkfifo(1)); released and removed when the test ends. */
export async function makeFifo (t: TestContext, file: string): Promise<void> {
  execFileSync('mkfifo', [file])
  t.teardown(() => releaseFifo(file))
}

/**
 * Unblocks whoever waits in open() or read() on the FIFO (opening it for writing lets a blocked
 * reader's open return; closing it gives the reader end-of-file), then removes it.
 */
export async function releaseFifo (file: string): Promise<void> {
  for (let i = 0; i < 64; i++) {
    try {
      // Non-blocking: ENXIO when nobody is reading, which means nobody is blocked either.
      const handle = await open(file, constants.O_WRONLY | constants.O_NONBLOCK)
      await handle.close()
    } catch {
      break
    }
  }
  await rm(file, { force: true })
}

export interface TimedResponse {
  status: number
  headers: Headers
  body: string
  ms: number
}

/** A GET that gives up after `timeoutMs`: status 0 and the elapsed time when it did. */
export async function getWithin (url: string, timeoutMs: number, init: RequestInit = {}): Promise<TimedResponse> {
  const started = performance.now()
  try {
    const response = await fetch(url, { ...init, signal: AbortSignal.timeout(timeoutMs) })
    const body = await response.text()
    return { status: response.status, headers: response.headers, body, ms: Math.round(performance.now() - started) }
  } catch {
    return { status: 0, headers: new Headers(), body: '', ms: Math.round(performance.now() - started) }
  }
}

/** The error code of a JSON error reply, or the start of the body. */
export function codeOf (response: TimedResponse): string {
  try {
    return (JSON.parse(response.body) as { code?: string }).code ?? response.body.slice(0, 60)
  } catch {
    return response.body.slice(0, 60)
  }
}
