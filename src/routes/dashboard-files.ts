import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import fastifyStatic from '@fastify/static'
import { lstatSync } from 'node:fs'
import { readdir } from 'node:fs/promises'
import path from 'node:path'
import { DataFileNotFoundError } from '../errors.ts'
import { FileLimits } from '../events/protocol.ts'
import { exactLengthStream, openRegularFile } from '../lib/safe-read.ts'
import type { ResolvedOptions } from '../options.ts'

/**
 * The page's policy: its own scripts, styles and images only, no inline code,
 * and network access only back to this origin (CSP 3 `'self'` covers ws/wss to it).
 */
export const contentSecurityPolicy = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'"
].join('; ')

/**
 * Lists the regular files under `root` (relative, POSIX separators), leaving out
 * symlinks and dotfiles: the only paths the dashboard may serve.
 */
async function listServableFiles (root: string): Promise<Set<string>> {
  const entries = await readdir(root, { recursive: true, withFileTypes: true })
  const files = new Set<string>()
  for (const entry of entries) {
    if (!entry.isFile()) continue // symlinks report isSymbolicLink(), not isFile()
    const relative = path.relative(root, path.join(entry.parentPath, entry.name)).split(path.sep).join('/')
    if (relative.split('/').some(part => part.startsWith('.'))) continue
    files.add(relative)
  }
  return files
}

/**
 * Opens a whitelisted data file: the artifacts directory first, then the dashboard directory. Only a
 * regular file is opened (a FIFO or a device there is refused with SPRINT_FILE_NOT_REGULAR, not
 * skipped: the operator should hear about it), within `FileLimits.dataFileBytes`.
 */
async function openDataFile (name: string, dirs: readonly string[]) {
  for (const dir of dirs) {
    const opened = await openRegularFile(path.join(dir, name), {
      label: `${name} in ${dir}`,
      maxBytes: FileLimits.dataFileBytes,
      limitName: 'FileLimits.dataFileBytes'
    })
    if (opened !== null) return { ...opened, label: `${name} in ${dir}` }
  }
  return null
}

/**
 * Whether a dashboard file may be handed to @fastify/static: a regular file (not a link, FIFO or
 * device) within `FileLimits.dashboardFileBytes`, checked when it is requested, since the list made
 * at start-up says nothing of what the name holds now. `lstat` never blocks, whatever the file.
 */
function isServableNow (file: string): boolean {
  try {
    const stats = lstatSync(file)
    return stats.isFile() && stats.size <= FileLimits.dashboardFileBytes
  } catch {
    return false
  }
}

/**
 * Serves the dashboard page and its assets (@fastify/static) and the
 * whitelisted sprint data files. Nothing else on disk is reachable: static
 * files must be regular files listed at start-up, data files are fixed names.
 */
const dashboardFiles: FastifyPluginAsyncTypebox<Pick<ResolvedOptions, 'dashboardDir' | 'artifactsDir' | 'dataFiles'>> =
  async function dashboardFiles (fastify, options) {
    const dataDirs = [options.artifactsDir, options.dashboardDir]
    for (const [name, contentType] of Object.entries(options.dataFiles)) {
      fastify.get(`/${name}`, async (_request, reply) => {
        const found = await openDataFile(name, dataDirs)
        if (found === null) throw new DataFileNotFoundError(name, options.artifactsDir)
        // Exactly the bytes stat'ed: a file that grows is cut there, one that shrinks aborts the connection.
        return reply
          .header('Content-Type', contentType)
          .header('Content-Length', found.stats.size)
          .header('Cache-Control', 'no-cache')
          .header('X-Content-Type-Options', 'nosniff')
          .send(exactLengthStream(found.handle, found.stats.size, found.label))
      })
    }

    const servable = await listServableFiles(options.dashboardDir)
    await fastify.register(fastifyStatic, {
      root: options.dashboardDir,
      // The host app may have its own @fastify/static with reply.sendFile; we need none.
      decorateReply: false,
      dotfiles: 'deny',
      allowedPath: (pathName) => {
        const relative = path.posix.normalize(pathName).replace(/^\/+/, '')
        const file = relative === '' || relative.endsWith('/') ? `${relative}index.html` : relative
        return servable.has(file) && isServableNow(path.join(options.dashboardDir, file))
      },
      setHeaders: (res, filePath) => {
        res.setHeader('X-Content-Type-Options', 'nosniff')
        if (filePath.endsWith('.html')) res.setHeader('Content-Security-Policy', contentSecurityPolicy)
      }
    })
  }

export default dashboardFiles
