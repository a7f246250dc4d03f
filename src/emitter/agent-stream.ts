import type { CommandEnd, CommandMetrics, CommandProgress, CommandStart } from '../events/schemas.ts'
import { Limits } from '../events/schemas.ts'

/**
 * Translation of the agent CLI's `--output-format stream-json` NDJSON into dashboard events.
 * Everything here is pure (no I/O, injected clock for the coalescer) so the bridge in `cli.ts exec`
 * stays a thin wiring of child process → translator → coalescer → client.
 */

/** The events the bridge emits: the command lifecycle and its progress lines. */
export type BridgeEvent =
  | { type: 'command:start', payload: CommandStart }
  | { type: 'command:progress', payload: CommandProgress }
  | { type: 'command:end', payload: CommandEnd }

/** Which story, command and task the wrapped agent run belongs to. */
export interface CommandContext {
  storyKey: string
  command: string
  taskId: string
}

/** Longest progress line shown for assistant text; a dashboard row, not a transcript. */
export const MAX_PROGRESS_LENGTH = 200
const MAX_COMMAND_LENGTH = 120

/** Collapses all whitespace to single spaces and cuts the text to `max` characters with an ellipsis. */
export function condense (text: string, max = MAX_PROGRESS_LENGTH): string {
  const oneLine = text.replace(/\s+/g, ' ').trim()
  if (oneLine.length <= max) return oneLine
  return oneLine.slice(0, Math.max(0, max - 1)).trimEnd() + '…'
}

// ---------------------------------------------------------------------------------------------
// CSV task-log lines (`sprint-log` compatibility)
// ---------------------------------------------------------------------------------------------

/** One line of the sprint runner's task log: `timestamp,epicID,storyID,command,task-id,status,"message"`. */
export interface TaskLogEntry {
  timestamp: string
  epicId: string
  storyKey: string
  command: string
  taskId: string
  status: string
  message: string
}

export type TaskLogParseResult =
  | { ok: true, entry: TaskLogEntry }
  | { ok: false, reason: string }

// Unix seconds or milliseconds, or an ISO-8601 date-time. Requiring a real timestamp keeps arbitrary
// comma-separated tool output (a CSV file the agent printed, a stack trace) from becoming events.
const TIMESTAMP = /^(?:\d{9,13}(?:\.\d+)?|\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)$/
const TOKEN = /^[A-Za-z0-9][\w.:/-]*$/

/** Splits one CSV line (RFC 4180 quoting: `""` inside quotes is a quote). Returns null on an unterminated quote. */
function splitCsv (line: string): string[] | null {
  const fields: string[] = []
  let field = ''
  let quoted = false
  let atFieldStart = true
  for (let i = 0; i < line.length; i++) {
    const char = line[i]
    if (quoted) {
      if (char === '"') {
        if (line[i + 1] === '"') {
          field += '"'
          i++
        } else {
          quoted = false
        }
      } else {
        field += char
      }
    } else if (char === '"' && atFieldStart) {
      quoted = true
      atFieldStart = false
    } else if (char === ',') {
      fields.push(field)
      field = ''
      atFieldStart = true
    } else {
      field += char
      atFieldStart = false
    }
  }
  if (quoted) return null
  fields.push(field)
  return fields
}

/**
 * Parses one task-log CSV line. The message may be quoted (commas allowed inside) or bare, in which
 * case everything after the sixth comma is the message.
 *
 * @example
 * parseTaskLogLine('1732630000,2a,2a-1,dev-story,implement,start,"Implementing the parser"')
 * // → { ok: true, entry: { storyKey: '2a-1', command: 'dev-story', taskId: 'implement', status: 'start', ... } }
 */
export function parseTaskLogLine (line: string): TaskLogParseResult {
  const trimmed = line.replace(/\r$/, '').trim()
  if (trimmed === '') return { ok: false, reason: 'empty line' }
  let fields = splitCsv(trimmed)
  if (fields === null) return { ok: false, reason: 'unterminated quote' }
  if (fields.length > 7) {
    // A bare (unquoted) message that itself contains commas.
    fields = [...fields.slice(0, 6), fields.slice(6).join(',')]
  }
  if (fields.length !== 7) return { ok: false, reason: `expected 7 fields, got ${fields.length}` }
  const [timestamp, epicId, storyKey, command, taskId, status, message] = fields.map((field, index) => index < 6 ? field.trim() : field) as [string, string, string, string, string, string, string]
  if (!TIMESTAMP.test(timestamp)) return { ok: false, reason: `timestamp "${condense(timestamp, 40)}" is not a unix time or ISO date` }
  for (const [name, value] of [['epicID', epicId], ['storyID', storyKey], ['command', command], ['task-id', taskId], ['status', status]] as const) {
    if (value.length === 0) return { ok: false, reason: `${name} is empty` }
    if (value.length > Limits.key) return { ok: false, reason: `${name} is longer than ${Limits.key} characters` }
    if (!TOKEN.test(value)) return { ok: false, reason: `${name} "${condense(value, 40)}" has unexpected characters` }
  }
  if (message.length > Limits.message) return { ok: false, reason: `message is longer than ${Limits.message} characters` }
  return { ok: true, entry: { timestamp, epicId, storyKey, command, taskId, status, message } }
}

/**
 * Turns a task-log entry into events: status `start` → `command:start`, any other status → `command:end`
 * with that status. `command:start`/`command:end` payloads have no message field, so a non-empty message
 * travels as a `command:progress` for the same task (after the start, before the end).
 */
export function taskLogEvents (entry: TaskLogEntry): BridgeEvent[] {
  const ids = { story_key: entry.storyKey, command: entry.command, task_id: entry.taskId }
  const message = condense(entry.message, MAX_PROGRESS_LENGTH)
  const progress: BridgeEvent[] = message === '' ? [] : [{ type: 'command:progress', payload: { ...ids, message } }]
  if (entry.status === 'start') return [{ type: 'command:start', payload: ids }, ...progress]
  return [...progress, { type: 'command:end', payload: { ...ids, status: entry.status } }]
}

// ---------------------------------------------------------------------------------------------
// stream-json translation
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// progress coalescing
// ---------------------------------------------------------------------------------------------

/** Default minimum spacing of progress events for one command: at most four a second. */
export const PROGRESS_INTERVAL_MS = 250

export interface ProgressCoalescerOptions {
  /** Minimum time between two progress events of the same story/command/task. */
  intervalMs?: number
  /** Receives every progress event that survives coalescing, in order. */
  emit: (event: Extract<BridgeEvent, { type: 'command:progress' }>) => void
  now?: () => number
  setTimer?: (callback: () => void, ms: number) => unknown
  clearTimer?: (timer: unknown) => void
}

interface CoalescerSlot {
  lastEmitAt: number
  pending: Extract<BridgeEvent, { type: 'command:progress' }> | null
  timer: unknown
}

/**
 * Rate-limits progress per story/command/task: the first event goes out at once, later ones within
 * `intervalMs` replace each other (latest wins) and the survivor goes out when the interval is over.
 * `flush()` sends every pending event immediately; call it before a lifecycle event and at the end of a
 * run so nothing from the end of the run is dropped and progress never arrives after its `command:end`.
 *
 * @example
 * const coalescer = createProgressCoalescer({ emit: (event) => queue.push(event) })
 * coalescer.push(progressEvent)
 * coalescer.flush()
 */
export function createProgressCoalescer (options: ProgressCoalescerOptions) {
  const intervalMs = options.intervalMs ?? PROGRESS_INTERVAL_MS
  const now = options.now ?? Date.now
  const setTimer = options.setTimer ?? ((callback: () => void, ms: number) => setTimeout(callback, ms))
  const clearTimer = options.clearTimer ?? ((timer: unknown) => clearTimeout(timer as NodeJS.Timeout))
  const slots = new Map<string, CoalescerSlot>()

  function send (slot: CoalescerSlot): void {
    if (slot.timer !== null) clearTimer(slot.timer)
    slot.timer = null
    const event = slot.pending
    slot.pending = null
    if (event === null) return
    slot.lastEmitAt = now()
    options.emit(event)
  }

  return {
    push (event: Extract<BridgeEvent, { type: 'command:progress' }>): void {
      const { story_key: storyKey, command, task_id: taskId } = event.payload
      const key = `${storyKey}\u0000${command}\u0000${taskId}`
      let slot = slots.get(key)
      if (slot === undefined) {
        slot = { lastEmitAt: -Infinity, pending: null, timer: null }
        slots.set(key, slot)
      }
      slot.pending = event
      const wait = slot.lastEmitAt + intervalMs - now()
      if (slot.timer !== null) return
      if (wait <= 0) {
        send(slot)
      } else {
        const target = slot
        slot.timer = setTimer(() => {
          target.timer = null
          send(target)
        }, wait)
      }
    },

    /** Sends every pending event now and cancels their timers. */
    flush (): void {
      for (const slot of slots.values()) send(slot)
    },

    /** Events waiting for their interval to end. */
    get pendingCount (): number {
      let count = 0
      for (const slot of slots.values()) if (slot.pending !== null) count++
      return count
    }
  }
}

export type ProgressCoalescer = ReturnType<typeof createProgressCoalescer>
