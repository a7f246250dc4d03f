import type { Writable } from 'node:stream'
import { EventClientError } from './client.ts'

/** Writes one line (adding the newline) to a CLI's output stream. */
export function write (stream: Writable, text: string): void {
  stream.write(text.endsWith('\n') ? text : text + '\n')
}

/** An error as a CLI prints it: the service's message with every rejected field, or the error's message. */
export function describeError (error: unknown): string {
  if (error instanceof EventClientError) return error.describe()
  return error instanceof Error ? error.message : String(error)
}
