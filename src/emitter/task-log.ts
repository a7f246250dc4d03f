import { Limits } from '../events/schemas.ts'
import { condense, MAX_PROGRESS_LENGTH, type BridgeEvent } from './bridge-events.ts'

/** The sprint runner's CSV task-log lines (`sprint-log` compatibility), turned into command events. */

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
