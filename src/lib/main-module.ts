import { realpathSync } from 'node:fs'
import { pathToFileURL } from 'node:url'

/**
 * Whether the module at `moduleUrl` is the script node was started with, so an entry file can also be
 * imported without running. The script path is resolved through symlinks first: an installed `bin` runs
 * as `node_modules/.bin/<name>`, a link to the file whose `import.meta.url` is the real path.
 *
 * @example
 * if (isMainModule(import.meta.url)) await main()
 */
export function isMainModule (moduleUrl: string): boolean {
  const script = process.argv[1]
  if (script === undefined) return false
  try {
    return pathToFileURL(realpathSync(script)).href === moduleUrl
  } catch {
    return false
  }
}
