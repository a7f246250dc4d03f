import type Database from 'better-sqlite3'

/**
 * How `import-upstream` recognises what it already brought into a store.
 *
 * Every imported event carries, as an extra payload field, where it came from:
 * `upstream: { db, table, row }`, `db` being an identity of the sprint runner's
 * database (not its path, so that a moved or copied file is still the same
 * source). A second import reads these markers back and skips those rows. The
 * marker lives in the event itself, so the two write paths (the running
 * service's ingest, or the file of a stopped one) see the same state, and a
 * failed import resumes where it stopped.
 */

/** The payload field an imported event carries. */
export const UPSTREAM_FIELD = 'upstream'

/** Where an imported event came from in the sprint runner's database. */
export interface UpstreamMarker {
  /** Identity of the source database (see `import-upstream`). */
  db: string
  table: 'batches' | 'events'
  row: number
}

/** One source row's event, as a string: a batch row gives two events (start and end), hence the type. */
export function upstreamKey (table: string, row: number, type: string): string {
  return `${table}/${row}/${type}`
}

/** What a store already holds of one source database. */
export interface UpstreamImportState {
  /** `upstreamKey`s of the events already imported from it. */
  imported: string[]
  /** Every batch id the store knows, imported or not: a batch it has but did not import was sent live. */
  batches: number[]
  /** The batch the store shows as running, if any. */
  running: number | null
}

/**
 * Reads the import state of source `db` from a store's database. One scan of
 * the events table; `instr` skips the JSON parse for events that do not
 * mention the source (every event but the imported ones).
 */
export function readUpstreamImportState (database: Database.Database, db: string): UpstreamImportState {
  const rows = database.prepare<[string, string], { type: string, source_table: unknown, source_row: unknown }>(
    `SELECT type, json_extract(payload, '$.${UPSTREAM_FIELD}.table') AS source_table, json_extract(payload, '$.${UPSTREAM_FIELD}.row') AS source_row
     FROM events WHERE instr(payload, ?) > 0 AND json_extract(payload, '$.${UPSTREAM_FIELD}.db') = ?`
  ).all(JSON.stringify(db), db)
  const imported = rows
    .filter(row => typeof row.source_table === 'string' && typeof row.source_row === 'number')
    .map(row => upstreamKey(row.source_table as string, row.source_row as number, row.type))
  const batches = database.prepare<[], { id: number }>('SELECT id FROM batches ORDER BY id').all().map(row => row.id)
  // The store's own rule for the active batch (sqlite-store.ts).
  const running = database.prepare<[], { id: number }>(
    "SELECT id FROM batches WHERE status = 'running' ORDER BY started_at DESC, id DESC LIMIT 1").get()?.id ?? null
  return { imported, batches, running }
}
