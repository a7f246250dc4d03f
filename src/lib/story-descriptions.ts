import { readdir } from 'node:fs/promises'
import path from 'node:path'
import { FileLimits } from '../events/protocol.ts'
import { fileIdentity, isSettled, readRegularFile, statRegularFile, type SafeReadOptions } from './safe-read.ts'

/** Story files are named like `2a-1-some-title.md`. */
const storyFilePattern = /^\d+[a-z]?-[\w-]+\.md$/
const skippedFiles = new Set(['index.md', 'orchestrator.md'])
/** Larger files are not story files; skipping them keeps one request's memory bounded. */
export const MAX_STORY_FILE_BYTES = 1024 * 1024
const MAX_DESCRIPTION_CHARS = 500
/** Files read at once while scanning, so a large sprint does not open hundreds of descriptors. */
const READ_CONCURRENCY = 16

/**
 * The description of one story file: the `## Story` section, or failing that
 * the first lines under the `# ` title; null when there is neither.
 *
 * @example
 * extractDescription('# 2a-1\n\n## Story\nAs an **operator** I want...\n\n## Tasks') // 'As an operator I want...'
 */
export function extractDescription (markdown: string): string | null {
  const lines = markdown.split(/\r?\n/)
  const storyStart = lines.findIndex(line => line.startsWith('## Story'))
  let text: string
  if (storyStart !== -1) {
    const rest = lines.slice(storyStart + 1)
    const end = rest.findIndex(line => line.startsWith('## '))
    text = (end === -1 ? rest : rest.slice(0, end)).join('\n').trim()
    text = text.replace(/\*\*(.*?)\*\*/gs, '$1').replace(/(\r?\n)+/g, ' ')
  } else {
    const titleLine = lines.findIndex(line => line.startsWith('# '))
    if (titleLine === -1) return null
    const taken: string[] = []
    for (const line of lines.slice(titleLine + 1, titleLine + 10)) {
      if (line.startsWith('#')) break
      if (line.trim() !== '') taken.push(line.trim())
    }
    text = taken.join(' ')
  }
  text = text.slice(0, MAX_DESCRIPTION_CHARS)
  return text === '' ? null : text
}

export interface StoryDescriptionScan {
  /** Story id (file name without `.md`) → description. */
  descriptions: Record<string, string>
  /** Story files in the directory, described or not. */
  storyFiles: number
  /** More story files than `FileLimits.storyFiles`: only the first ones by name were read. */
  truncated: boolean
}

interface CachedDescription {
  identity: string
  description: string | null
}

function readOptions (dir: string, name: string, signal?: AbortSignal): SafeReadOptions {
  return {
    label: `${name} in ${dir}`,
    maxBytes: FileLimits.storyFileHeadBytes,
    limitName: 'FileLimits.storyFileHeadBytes',
    head: true,
    signal
  }
}

/**
 * Scans a sprint's artifacts directory for story files and maps each story id (the file name without
 * `.md`) to its description, reusing what it read before for files whose identity (device, inode,
 * size, times) has not changed. Bounded: at most `FileLimits.storyFiles` files, the first
 * `FileLimits.storyFileHeadBytes` of each, only regular files (a FIFO or device is skipped, never
 * opened), files over 1 MiB skipped as not story files. Scans that overlap share one pass.
 *
 * @example
 * const scanner = createStoryDescriptionScanner('_bmad-output/implementation-artifacts')
 * const { descriptions, truncated } = await scanner.scan()
 */
export function createStoryDescriptionScanner (dir: string) {
  let cache = new Map<string, CachedDescription>()
  let running: Promise<StoryDescriptionScan> | null = null

  async function describe (name: string, next: Map<string, CachedDescription>): Promise<void> {
    const file = path.join(dir, name)
    const options = readOptions(dir, name)
    try {
      const stats = await statRegularFile(file, options)
      if (stats === null || stats.size > MAX_STORY_FILE_BYTES) return
      const identity = fileIdentity(stats)
      const cached = cache.get(name)
      if (cached !== undefined && cached.identity === identity && isSettled(stats)) {
        next.set(name, cached)
        return
      }
      const read = await readRegularFile(file, options)
      if (read === null || read.stats.size > MAX_STORY_FILE_BYTES) return
      next.set(name, { identity: fileIdentity(read.stats), description: extractDescription(read.data.toString('utf8')) })
    } catch {
      // Not a regular file, replaced mid-read, unreadable: not a story file for this scan.
    }
  }

  async function scanOnce (): Promise<StoryDescriptionScan> {
    let names: string[]
    try {
      names = await readdir(dir)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') {
        cache = new Map()
        return { descriptions: {}, storyFiles: 0, truncated: false }
      }
      throw err
    }
    const storyFiles = names
      .filter(name => storyFilePattern.test(name) && !name.startsWith('tech-spec-') && !skippedFiles.has(name))
      .sort()
    const taken = storyFiles.slice(0, FileLimits.storyFiles)
    const next = new Map<string, CachedDescription>()
    for (let i = 0; i < taken.length; i += READ_CONCURRENCY) {
      await Promise.all(taken.slice(i, i + READ_CONCURRENCY).map(name => describe(name, next)))
    }
    cache = next
    const descriptions: Record<string, string> = {}
    for (const name of taken) {
      const description = next.get(name)?.description ?? null
      if (description !== null) descriptions[name.slice(0, -'.md'.length)] = description
    }
    return { descriptions, storyFiles: storyFiles.length, truncated: storyFiles.length > taken.length }
  }

  return {
    /** Scans the directory now (or joins the scan already running). */
    async scan (): Promise<StoryDescriptionScan> {
      running ??= scanOnce().finally(() => { running = null })
      return await running
    }
  }
}

/**
 * Scans a sprint's artifacts directory for story files and maps each story id
 * (the file name without `.md`) to its description. A missing directory yields `{}`.
 * One pass without a cache; the route keeps a scanner (`createStoryDescriptionScanner`).
 */
export async function scanStoryDescriptions (dir: string): Promise<Record<string, string>> {
  return (await createStoryDescriptionScanner(dir).scan()).descriptions
}
