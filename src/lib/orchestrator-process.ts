import { spawn } from 'node:child_process'
import type { Readable } from 'node:stream'
import { OrchestratorLimits } from '../events/schemas.ts'

/**
 * One orchestrator child process: spawned from an argv array (never a shell) as the leader of its own
 * process group, so that signals can reach the agent commands it runs; its output split into lines;
 * its exit watched. What the lines and the exit mean is the supervisor's business (src/plugins/orchestrator.ts).
 */

export type OutputStream = 'stdout' | 'stderr'

/** One line of the orchestrator's output as the dashboard's output panel shows it. */
export interface OutputLine {
  /** 1-based, increasing over the service's lifetime: `GET /api/orchestrator/output?after=<n>` tails from it. */
  n: number
  stream: OutputStream
  text: string
  /** ms since the epoch */
  at: number
}

/**
 * The last `maxLines` lines of output, numbered. Old lines drop off the front; numbers never repeat,
 * so a reader that asks for the lines after the last one it saw never gets one twice.
 *
 * @example
 * const buffer = createOutputBuffer()
 * buffer.push('stdout', 'cycle 1: 1-1-login')
 * buffer.after(0) // { lines: [{ n: 1, stream: 'stdout', text: 'cycle 1: 1-1-login', at: ... }], next: 1 }
 */
export function createOutputBuffer (maxLines: number = OrchestratorLimits.outputLines, maxLineBytes: number = OrchestratorLimits.outputLineBytes) {
  let lines: OutputLine[] = []
  let last = 0
  return {
    push (stream: OutputStream, text: string, at = Date.now()): OutputLine {
      const line = { n: ++last, stream, text: truncateUtf8(text, maxLineBytes), at }
      lines.push(line)
      // Trimmed in steps of a tenth, so that a chatty orchestrator does not cost a shift per line.
      if (lines.length > maxLines + Math.ceil(maxLines / 10)) lines = lines.slice(-maxLines)
      return line
    },
    /**
     * The kept lines numbered above `after`, and the number to ask after next time. An `after` beyond the
     * last line (a reader that outlived a restart of the service) is answered from the start.
     */
    after (after: number): { lines: OutputLine[], next: number } {
      const from = after > last ? 0 : after
      const kept = lines.length > maxLines ? lines.slice(-maxLines) : lines
      // Numbers are consecutive, so the first wanted line's index is arithmetic.
      const first = kept.length === 0 ? 0 : Math.max(0, from + 1 - kept[0]!.n)
      return { lines: kept.slice(first), next: last }
    },
    get lastNumber (): number { return last }
  }
}

export type OutputBuffer = ReturnType<typeof createOutputBuffer>

/** Cuts text to at most `maxBytes` of UTF-8 without splitting a character. */
export function truncateUtf8 (text: string, maxBytes: number): string {
  // Every UTF-16 unit is at most 3 bytes of UTF-8: short strings need no encoding at all.
  if (text.length * 3 <= maxBytes) return text
  const bytes = Buffer.from(text, 'utf8')
  if (bytes.length <= maxBytes) return text
  let end = maxBytes
  // Back off continuation bytes (10xxxxxx) to the start of the character that straddles the cut.
  while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end--
  return bytes.subarray(0, end).toString('utf8')
}

/**
 * Splits a byte stream into lines (LF or CRLF), holding at most `maxLineBytes` of a line: the rest of
 * an over-long line is dropped up to its newline, so an orchestrator that never prints a newline
 * cannot make the service buffer without bound. A last line without a newline is delivered at the end.
 */
export function splitLines (stream: Readable, maxLineBytes: number, onLine: (text: string) => void): Promise<void> {
  let pending: Buffer[] = []
  let pendingBytes = 0
  let overflowed = false
  const deliver = (): void => {
    let line = Buffer.concat(pending)
    pending = []
    pendingBytes = 0
    overflowed = false
    if (line.at(-1) === 0x0d) line = line.subarray(0, -1)
    onLine(truncateUtf8(line.toString('utf8'), maxLineBytes))
  }
  const keep = (chunk: Buffer): void => {
    if (overflowed || chunk.length === 0) return
    const room = maxLineBytes - pendingBytes
    if (chunk.length > room) {
      // One byte more than the limit is kept, so that truncateUtf8 sees the cut and does not split a character.
      pending.push(chunk.subarray(0, room + 1))
      pendingBytes += room + 1
      overflowed = true
      return
    }
    pending.push(chunk)
    pendingBytes += chunk.length
  }
  stream.on('data', (chunk: Buffer) => {
    let start = 0
    for (let newline = chunk.indexOf(0x0a); newline !== -1; newline = chunk.indexOf(0x0a, start)) {
      keep(chunk.subarray(start, newline))
      deliver()
      start = newline + 1
    }
    keep(chunk.subarray(start))
  })
  return new Promise(resolve => {
    stream.once('close', () => {
      if (pendingBytes > 0) deliver()
      resolve()
    })
  })
}

/** How an orchestrator ended. */
export interface ProcessExit {
  code: number | null
  signal: NodeJS.Signals | null
  /** ms since the epoch */
  at: number
  durationMs: number
}

export interface SpawnOptions {
  /** Program and arguments, already substituted. */
  argv: readonly string[]
  cwd?: string | undefined
  /** The whole environment of the child. */
  env: NodeJS.ProcessEnv
  /** Longest stdout line handed to `onStdoutLine` (longer ones are cut). */
  maxStdoutLineBytes: number
  onStdoutLine: (text: string) => void
  onStderrLine: (text: string) => void
}

/** A spawn that failed: the OS error (ENOENT, EACCES, ...) and a sentence naming the program. */
export class SpawnError extends Error {
  readonly code: string | undefined
  constructor (message: string, code: string | undefined, cause: unknown) {
    super(message, { cause })
    this.name = 'SpawnError'
    this.code = code
  }
}

/** After the leader exits, how long its output pipes may stay open (held by a straggler) before they are cut. */
const PIPE_GRACE_MS = 2000

/**
 * Starts the orchestrator and resolves once the OS has started it; rejects with `SpawnError` when it
 * could not (the program is missing or not executable, the working directory is missing).
 *
 * The child is the leader of a new process group (`detached`), so `signal(..., 'group')` reaches every
 * process it started. When the leader exits, whatever is left of its group is killed: the group never
 * outlives its leader, so no agent command is orphaned. `exited` resolves after that, once its output
 * has been read to the end.
 *
 * @example
 * const child = await spawnOrchestrator({ argv: ['python3', 'orchestrator.py', '2'], env: process.env, maxStdoutLineBytes: 4096, onStdoutLine: console.log, onStderrLine: console.error })
 * child.signal('SIGINT', 'leader')
 * const { code } = await child.exited
 */
export async function spawnOrchestrator (options: SpawnOptions) {
  const [file, ...args] = options.argv
  const child = spawn(file!, args, {
    cwd: options.cwd,
    env: options.env,
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
    // Never a shell: `{batch_size}` and every argument reach the program as they are.
    shell: false
  })
  // Listened for before anything is awaited, so no exit can slip by.
  const exitEvent = new Promise<[number | null, NodeJS.Signals | null]>(resolve => {
    child.once('exit', (code, signalName) => resolve([code, signalName]))
  })
  try {
    await new Promise<void>((resolve, reject) => {
      const onSpawn = (): void => {
        child.off('error', onError)
        resolve()
      }
      const onError = (error: Error): void => {
        child.off('spawn', onSpawn)
        reject(error)
      }
      child.once('spawn', onSpawn)
      child.once('error', onError)
    })
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    throw new SpawnError((error as Error).message, code, error)
  }
  // Signals go through process.kill, so a later 'error' can only be about the pipes; the exit still comes.
  child.on('error', () => {})
  const pid = child.pid!
  const startedAt = Date.now()
  const startedAtMonotonic = performance.now()
  const stdoutDone = splitLines(child.stdout!, options.maxStdoutLineBytes, options.onStdoutLine)
  const stderrDone = splitLines(child.stderr!, OrchestratorLimits.outputLineBytes, options.onStderrLine)
  let alive = true

  function signal (name: NodeJS.Signals, target: 'leader' | 'group'): boolean {
    try {
      process.kill(target === 'group' ? -pid : pid, name)
      return true
    } catch {
      // ESRCH: already gone (or the group is empty); nothing to signal is not an error here.
      return false
    }
  }

  const exited = (async (): Promise<ProcessExit> => {
    const [code, signalName] = await exitEvent
    alive = false
    const exit: ProcessExit = { code, signal: signalName, at: Date.now(), durationMs: Math.round(performance.now() - startedAtMonotonic) }
    signal('SIGKILL', 'group')
    const cut = setTimeout(() => {
      child.stdout!.destroy()
      child.stderr!.destroy()
    }, PIPE_GRACE_MS)
    await Promise.all([stdoutDone, stderrDone])
    clearTimeout(cut)
    return exit
  })()

  return {
    pid,
    startedAt,
    /** Resolves once the leader exited, its group is gone and its output is read. Never rejects. */
    exited,
    /** Sends a signal to the orchestrator alone (`leader`) or to every process of its group; false when nothing was there. */
    signal,
    get alive (): boolean { return alive }
  }
}

export type OrchestratorProcess = Awaited<ReturnType<typeof spawnOrchestrator>>
