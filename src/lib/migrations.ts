import type { Database } from 'better-sqlite3'
import { DatabaseTooNewError, InvalidOptionError } from '../errors.ts'

/**
 * Schema versions for the SQLite file. The version lives in SQLite's own `PRAGMA user_version`
 * (0 in a file no migration has touched, which is what the releases before this framework wrote),
 * and every migration that is newer than it runs, in order, inside one transaction together with
 * the version bump: a crash or a failing step leaves the file exactly as it was.
 */

/** One step of the schema. `up` runs inside the migration transaction; it must not open its own. */
export interface Migration {
  /** 1, 2, 3, ... with no gaps: the `user_version` the file has once this step ran. */
  version: number
  /** What the step does, for the log and for whoever reads the list. */
  name: string
  up: (db: Database) => void
}

/** What `migrate` did. */
export interface MigrationResult {
  from: number
  to: number
  /** Names of the steps that ran, oldest first; empty when the file was current. */
  applied: string[]
}

/** Checks the list once: versions 1..n in order, so a step can never be skipped or run twice. */
function checkOrder (migrations: readonly Migration[]): void {
  migrations.forEach((migration, index) => {
    if (migration.version !== index + 1) {
      throw new InvalidOptionError('migrations', `step ${index} ("${migration.name}") has version ${migration.version}; expected ${index + 1}`)
    }
  })
}

/**
 * Brings the file up to the last migration's version. A file written by a newer release (a higher
 * `user_version` than this code knows) is refused rather than written to with an older idea of the schema.
 *
 * @example
 * migrate(db, [
 *   { version: 1, name: 'events table', up: db => db.exec('CREATE TABLE IF NOT EXISTS events (...)') },
 *   { version: 2, name: 'events.batch_id', up: db => db.exec('ALTER TABLE events ADD COLUMN batch_id INTEGER') }
 * ]) // → { from: 0, to: 2, applied: ['events table', 'events.batch_id'] }
 */
export function migrate (db: Database, migrations: readonly Migration[]): MigrationResult {
  checkOrder(migrations)
  const latest = migrations.length
  const readVersion = (): number => db.pragma('user_version', { simple: true }) as number
  const run = db.transaction((): MigrationResult => {
    // Read inside the transaction: two processes opening the same old file at once must not both migrate it.
    const from = readVersion()
    if (from > latest) throw new DatabaseTooNewError(db.name, from, latest)
    const pending = migrations.slice(from)
    for (const migration of pending) migration.up(db)
    // PRAGMA takes no bound parameters; `latest` is an integer we computed.
    if (pending.length > 0) db.pragma(`user_version = ${latest}`)
    return { from, to: Math.max(from, latest), applied: pending.map(migration => migration.name) }
  })
  // IMMEDIATE takes the write lock before the version is read, so the check and the steps are one step.
  return run.immediate()
}
