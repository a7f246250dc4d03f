import type { CommandMetrics } from '../events/schemas.ts'
import { condense, type BridgeEvent, type CommandContext } from './bridge-events.ts'
import { parseTaskLogLine, taskLogEvents } from './task-log.ts'

/** Longest command line shown for a Bash tool use. */
const MAX_COMMAND_LENGTH = 120

/** Translation of the agent CLI's `--output-format stream-json` NDJSON into command events. */

type JsonObject = Record<string, unknown>

function isObject (value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function stringField (object: JsonObject, key: string): string | undefined {
  const value = object[key]
  return typeof value === 'string' ? value : undefined
}

function numberField (object: JsonObject, key: string): number | undefined {
  const value = object[key]
  return typeof value === 'number' && Number.isFinite(value) && value >= 0 ? value : undefined
}

/**
 * One-line description of a tool use, the way an operator reads it: `Edit src/foo.ts`, `Bash: npm test`.
 * Paths under the agent's working directory are shown relative to it.
 */
export function describeToolUse (name: string, input: unknown, cwd?: string): string {
  const args = isObject(input) ? input : {}
  const relative = (path: string): string => {
    if (cwd !== undefined && cwd !== '' && path.startsWith(cwd.endsWith('/') ? cwd : cwd + '/')) {
      return path.slice(cwd.length).replace(/^\/+/, '')
    }
    return path
  }
  const text = (key: string): string | undefined => stringField(args, key)
  switch (name) {
    case 'Read':
    case 'Edit':
    case 'MultiEdit':
    case 'Write': {
      const path = text('file_path')
      return condense(path === undefined ? name : `${name} ${relative(path)}`)
    }
    case 'NotebookEdit': {
      const path = text('notebook_path')
      return condense(path === undefined ? name : `${name} ${relative(path)}`)
    }
    case 'Bash': {
      const command = text('command')
      return command === undefined ? 'Bash' : `Bash: ${condense(command, MAX_COMMAND_LENGTH)}`
    }
    case 'Grep': {
      const pattern = text('pattern') ?? ''
      const path = text('path')
      return condense(`Grep: ${pattern}${path === undefined ? '' : ` in ${relative(path)}`}`)
    }
    case 'Glob':
      return condense(`Glob: ${text('pattern') ?? ''}`)
    case 'WebFetch':
      return condense(`WebFetch: ${text('url') ?? ''}`)
    case 'WebSearch':
      return condense(`WebSearch: ${text('query') ?? ''}`)
    case 'Task':
      return condense(`Task: ${text('description') ?? text('prompt') ?? ''}`)
    case 'TodoWrite': {
      const todos = Array.isArray(args.todos) ? args.todos.filter(isObject) : []
      const active = todos.find((todo) => todo.status === 'in_progress')
      const activeText = active === undefined ? undefined : stringField(active, 'activeForm') ?? stringField(active, 'content')
      return condense(activeText === undefined ? `TodoWrite: ${todos.length} todos` : `Todo: ${activeText}`)
    }
    default: {
      const firstText = Object.values(args).find((value): value is string => typeof value === 'string')
      return condense(firstText === undefined ? name : `${name}: ${firstText}`)
    }
  }
}

/** The text of a tool result, whose `content` is a string or a list of `{type:'text', text}` blocks. */
function toolResultText (content: unknown): string {
  if (typeof content === 'string') return content
  if (!Array.isArray(content)) return ''
  return content
    .filter(isObject)
    .map((block) => stringField(block, 'text') ?? '')
    .join('\n')
}

/**
 * `CommandMetrics` accepts any numeric key (the schema's `additionalProperties`), which `Static<>`
 * does not express; this is that type.
 */
export type RunMetrics = CommandMetrics & { [key: string]: number | undefined }

/** What the final `result` message said. */
export interface AgentResult {
  isError: boolean
  subtype?: string
  text?: string
  metrics: RunMetrics
}

/**
 * Metrics of a run from the final `result` message. `tokens` is every token the model processed
 * (input, cache writes, cache reads and output), the number an operator compares between runs.
 */
export function resultMetrics (message: JsonObject): RunMetrics {
  const metrics: RunMetrics = {}
  for (const key of ['duration_ms', 'duration_api_ms', 'num_turns', 'total_cost_usd'] as const) {
    const value = numberField(message, key)
    if (value !== undefined) metrics[key] = value
  }
  const usage = isObject(message.usage) ? message.usage : undefined
  if (usage !== undefined) {
    let tokens = 0
    let any = false
    for (const key of ['input_tokens', 'cache_creation_input_tokens', 'cache_read_input_tokens', 'output_tokens'] as const) {
      const value = numberField(usage, key)
      if (value !== undefined) {
        metrics[key] = value
        tokens += value
        any = true
      }
    }
    if (any) metrics.tokens = tokens
  }
  return metrics
}

/** How the agent process ended. `exitCode` null means it was killed by `signal`. */
export interface AgentExit {
  exitCode: number | null
  signal?: NodeJS.Signals | null
  /** Wall-clock duration measured by the bridge; used when the agent never sent its `result`. */
  durationMs?: number
}

/**
 * Creates a translator for one agent run. Feed it every stdout line with `translateLine` and call
 * `finish` once the process exited to get the closing `command:end`.
 *
 * @example
 * const translator = createAgentStreamTranslator({ storyKey: '2a-1', command: 'dev-story', taskId: 'dev-story' })
 * for (const event of translator.translateLine(line)) send(event)
 * send(translator.finish({ exitCode: 0 }))
 */
export function createAgentStreamTranslator (context: CommandContext) {
  const ids = { story_key: context.storyKey, command: context.command, task_id: context.taskId }
  const toolNames = new Map<string, string>()
  const seenTaskLogLines = new Set<string>()
  let cwd: string | undefined
  let malformedLines = 0
  let result: AgentResult | null = null

  const progress = (message: string): BridgeEvent => ({ type: 'command:progress', payload: { ...ids, message } })

  function translateAssistant (message: JsonObject): BridgeEvent[] {
    const content = isObject(message.message) && Array.isArray(message.message.content) ? message.message.content : []
    const events: BridgeEvent[] = []
    for (const block of content) {
      if (!isObject(block)) continue
      if (block.type === 'text') {
        const text = condense(stringField(block, 'text') ?? '')
        if (text !== '') events.push(progress(text))
      } else if (block.type === 'tool_use') {
        const name = stringField(block, 'name') ?? 'tool'
        const id = stringField(block, 'id')
        if (id !== undefined) toolNames.set(id, name)
        events.push(progress(describeToolUse(name, block.input, cwd)))
      }
      // `thinking` blocks are the model's scratchpad: not shown.
    }
    return events
  }

  function translateUser (message: JsonObject): BridgeEvent[] {
    const content = isObject(message.message) && Array.isArray(message.message.content) ? message.message.content : []
    const events: BridgeEvent[] = []
    for (const block of content) {
      if (!isObject(block) || block.type !== 'tool_result') continue
      const text = toolResultText(block.content)
      if (block.is_error === true) {
        const toolName = toolNames.get(stringField(block, 'tool_use_id') ?? '') ?? 'Tool'
        const firstLine = text.split('\n').find((line) => line.trim() !== '') ?? ''
        events.push(progress(condense(`${toolName} failed: ${firstLine}`)))
      }
      for (const line of text.split('\n')) {
        // Cheap pre-filter before the CSV parser: a task-log line has at least six commas.
        if (line.split(',').length < 7) continue
        const parsed = parseTaskLogLine(line)
        if (!parsed.ok) continue
        // The same log line echoed twice (the log script, then `cat` of the log) is one task phase.
        const key = line.trim()
        if (seenTaskLogLines.has(key)) continue
        seenTaskLogLines.add(key)
        events.push(...taskLogEvents(parsed.entry))
      }
    }
    return events
  }

  function translateResult (message: JsonObject): BridgeEvent[] {
    const isError = message.is_error === true
    const subtype = stringField(message, 'subtype')
    const text = stringField(message, 'result')
    result = { isError, metrics: resultMetrics(message) }
    if (subtype !== undefined) result.subtype = subtype
    if (text !== undefined) result.text = text
    if (!isError) return []
    return [progress(condense(`Agent error: ${text ?? subtype ?? 'unknown error'}`))]
  }

  return {
    /** Translates one stdout line; blank lines give nothing, malformed ones are counted and give nothing. */
    translateLine (line: string): BridgeEvent[] {
      if (line.trim() === '') return []
      let message: unknown
      try {
        message = JSON.parse(line)
      } catch {
        malformedLines++
        return []
      }
      if (!isObject(message) || typeof message.type !== 'string') {
        malformedLines++
        return []
      }
      switch (message.type) {
        case 'system': {
          if (message.subtype !== 'init') return []
          cwd = stringField(message, 'cwd')
          const model = stringField(message, 'model')
          return [progress(condense(model === undefined ? 'Agent session started' : `Agent session started (${model})`))]
        }
        case 'assistant':
          return translateAssistant(message)
        case 'user':
          return translateUser(message)
        case 'result':
          return translateResult(message)
        default:
          // Other message kinds (partial stream events, future additions) are not for the dashboard.
          return []
      }
    },

    /** The `command:end` that closes the run: `error` on a non-zero exit or an `is_error` result, else `success`. */
    finish (exit: AgentExit): Extract<BridgeEvent, { type: 'command:end' }> {
      const metrics: RunMetrics = { ...result?.metrics }
      if (metrics.duration_ms === undefined && exit.durationMs !== undefined) metrics.duration_ms = Math.max(0, Math.round(exit.durationMs))
      const exitCode = exitCodeOf(exit)
      metrics.exit_code = exitCode
      const status = exitCode === 0 && result?.isError !== true ? 'success' : 'error'
      return { type: 'command:end', payload: { ...ids, status, metrics } }
    },

    /** Lines that were not JSON objects with a `type`. */
    get malformedLines (): number {
      return malformedLines
    },

    /** The final `result` message, once seen. */
    get result (): AgentResult | null {
      return result
    }
  }
}

export type AgentStreamTranslator = ReturnType<typeof createAgentStreamTranslator>

const SIGNAL_NUMBERS: Partial<Record<NodeJS.Signals, number>> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGTERM: 15 }

/** The exit code a shell would report: the code itself, or 128 + signal number for a killed process. */
export function exitCodeOf (exit: AgentExit): number {
  if (exit.exitCode !== null) return exit.exitCode
  const number = exit.signal == null ? undefined : SIGNAL_NUMBERS[exit.signal]
  return number === undefined ? 1 : 128 + number
}
