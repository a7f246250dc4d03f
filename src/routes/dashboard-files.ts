import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import fastifyStatic from '@fastify/static'
import { createReadStream } from 'node:fs'
import { readdir, stat } from 'node:fs/promises'
import path from 'node:path'
import { DataFileNotFoundError } from '../errors.ts'
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

/** Finds a whitelisted data file: the artifacts directory first, then the dashboard directory. */
async function locateDataFile (name: string, dirs: readonly string[]): Promise<{ file: string, size: number } | null> {
  for (const dir of dirs) {
    const file = path.join(dir, name)
    try {
      const info = await stat(file)
      if (info.isFile()) return { file, size: info.size }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' && (err as NodeJS.ErrnoException).code !== 'ENOTDIR') throw err
    }
  }
  return null
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
        const found = await locateDataFile(name, dataDirs)
        if (found === null) throw new DataFileNotFoundError(name, options.artifactsDir)
        return reply
          .header('Content-Type', contentType)
          .header('Content-Length', found.size)
          .header('Cache-Control', 'no-cache')
          .header('X-Content-Type-Options', 'nosniff')
          .send(createReadStream(found.file))
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
        return servable.has(relative === '' || relative.endsWith('/') ? `${relative}index.html` : relative)
      },
      setHeaders: (res, filePath) => {
        res.setHeader('X-Content-Type-Options', 'nosniff')
        if (filePath.endsWith('.html')) res.setHeader('Content-Security-Policy', contentSecurityPolicy)
      }
    })
  }

export default dashboardFiles
