import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import type { Writable } from 'node:stream'
import type { BridgeEvent } from './bridge-events.ts'
import { createEventSender, type EventClient } from './client.ts'
import { describeError, write } from './output.ts'
import { createProgressCoalescer } from './progress-coalescer.ts'
import { createAgentStreamTranslator, exitCodeOf, type AgentExit } from './stream-json.ts'

/**
 * The exec bridge: runs an agent command with stream-json output and turns it into command events.
 * `sprint-dashboard exec` (cli.ts) calls it; an orchestrator in TypeScript can call it in-process.
 */

/** Options of `runExec`, the bridge behind `sprint-dashboard exec`. */
export interface ExecOptions {
  client: EventClient
  storyKey: string
  command: string
  taskId: string
  /** The agent command and its arguments. */
  argv: readonly string[]
  /** Receives the agent's stdout unchanged, so `exec` can stand in for the agent command. */
  stdout: Writable
  stderr: Writable
  /** Minimum spacing of progress events. Default 250 ms. */
  progressIntervalMs?: number
  env?: NodeJS.ProcessEnv
  /**
   * Pass SIGINT and SIGTERM received by this process on to the agent. Default true, as `cli.ts exec`
   * stands in for the agent. An orchestrator that runs the bridge in its own process and takes SIGINT
   * as "finish the current command, then stop" sets it to false, so the command is not interrupted.
   */
  forwardSignals?: boolean
}

/**
 * Runs an agent command, posts `command:start`, its progress (coalesced) and task-log phases, then
 * `command:end` with the result's status and metrics. Resolves with the agent's exit code; a service
 * that cannot be reached is reported on stderr but never changes the exit code.
 */
export async function runExec (options: ExecOptions): Promise<number> {
  const { storyKey, command, taskId, stderr } = options
  const ids = { story_key: storyKey, command, task_id: taskId }
  const reported = new Set<string>()
  const sender = createEventSender(options.client, {
    onError: (error) => {
      // One line per distinct failure: a down service would otherwise print once per request.
      const text = describeError(error)
      if (reported.has(text)) return
      reported.add(text)
      write(stderr, `exec: could not post events: ${text}`)
    }
  })
  const coalescer = createProgressCoalescer({
    emit: (event) => sender.enqueue(event),
    ...(options.progressIntervalMs === undefined ? {} : { intervalMs: options.progressIntervalMs })
  })
  const translator = createAgentStreamTranslator({ storyKey, command, taskId })
  const isOwnProgress = (event: BridgeEvent): boolean => event.type === 'command:progress' &&
    event.payload.story_key === storyKey && event.payload.command === command && event.payload.task_id === taskId
  const forward = (events: BridgeEvent[]): void => {
    for (const event of events) {
      if (isOwnProgress(event)) {
        coalescer.push(event as Extract<BridgeEvent, { type: 'command:progress' }>)
      } else {
        // Task phases are never coalesced, and pending progress goes first so the order on the dashboard is the agent's.
        coalescer.flush()
        sender.enqueue(event)
      }
    }
  }

  sender.enqueue({ type: 'command:start', payload: ids })
  const startedAt = performance.now()
  const [file, ...args] = options.argv
  const exit = await new Promise<AgentExit>((resolve) => {
    const child = spawn(file!, args, { stdio: ['inherit', 'pipe', 'inherit'], env: options.env ?? process.env })
    const forwardSignal = (signal: NodeJS.Signals): void => { child.kill(signal) }
    const forwarding = options.forwardSignals ?? true
    if (forwarding) {
      process.on('SIGINT', forwardSignal)
      process.on('SIGTERM', forwardSignal)
    }
    let settled = false
    const settle = (result: AgentExit): void => {
      if (settled) return
      settled = true
      if (forwarding) {
        process.off('SIGINT', forwardSignal)
        process.off('SIGTERM', forwardSignal)
      }
      resolve({ ...result, durationMs: performance.now() - startedAt })
    }
    child.once('error', (error: NodeJS.ErrnoException) => {
      forward([{ type: 'command:progress', payload: { ...ids, message: `Could not start ${file}: ${error.message}` } }])
      // The shell's codes: 127 command not found, 126 found but not runnable.
      settle({ exitCode: error.code === 'ENOENT' ? 127 : 126 })
    })
    child.stdout.pipe(options.stdout, { end: false })
    const lines = createInterface({ input: child.stdout, crlfDelay: Infinity })
    lines.on('line', (line) => forward(translator.translateLine(line)))
    // 'close' comes after stdout ended, so every line has been translated by then.
    child.once('close', (exitCode, signal) => settle({ exitCode, signal }))
  })

  coalescer.flush()
  sender.enqueue(translator.finish(exit))
  await sender.drain()
  if (translator.malformedLines > 0) {
    write(stderr, `exec: skipped ${translator.malformedLines} malformed line(s) of agent output`)
  }
  return exitCodeOf(exit)
}
