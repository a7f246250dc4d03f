import type { CommandEnd, CommandProgress, CommandStart } from '../events/schemas.ts'

/**
 * What the agent bridge (`cli.ts exec`, `log-csv`) emits, shared by its three parts: stream-json
 * translation (`stream-json.ts`), task-log lines (`task-log.ts`) and progress coalescing
 * (`progress-coalescer.ts`). Everything in them is pure (no I/O, an injected clock for the
 * coalescer), so the bridge stays a thin wiring of child process → translator → coalescer → client.
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

/** Collapses all whitespace to single spaces and cuts the text to `max` characters with an ellipsis. */
export function condense (text: string, max = MAX_PROGRESS_LENGTH): string {
  const oneLine = text.replace(/\s+/g, ' ').trim()
  if (oneLine.length <= max) return oneLine
  return oneLine.slice(0, Math.max(0, max - 1)).trimEnd() + '…'
}
