import { open, readdir } from 'node:fs/promises'
import path from 'node:path'

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

/** Reads at most `MAX_STORY_FILE_BYTES` of a file, or null when it is larger or not a regular file. */
async function readBounded (file: string): Promise<string | null> {
  const handle = await open(file, 'r')
  try {
    const stat = await handle.stat()
    if (!stat.isFile() || stat.size > MAX_STORY_FILE_BYTES) return null
    return await handle.readFile('utf8')
  } finally {
    await handle.close()
  }
}

/**
 * Scans a sprint's artifacts directory for story files and maps each story id
 * (the file name without `.md`) to its description. A missing directory yields `{}`.
 */
export async function scanStoryDescriptions (dir: string): Promise<Record<string, string>> {
  let names: string[]
  try {
    names = await readdir(dir)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return {}
    throw err
  }
  const storyFiles = names
    .filter(name => storyFilePattern.test(name) && !name.startsWith('tech-spec-') && !skippedFiles.has(name))
    .sort()
  const descriptions: Record<string, string> = {}
  for (let i = 0; i < storyFiles.length; i += READ_CONCURRENCY) {
    const chunk = storyFiles.slice(i, i + READ_CONCURRENCY)
    const texts = await Promise.all(chunk.map(name => readBounded(path.join(dir, name)).catch(() => null)))
    chunk.forEach((name, index) => {
      const text = texts[index]
      const description = text == null ? null : extractDescription(text)
      if (description !== null) descriptions[name.slice(0, -'.md'.length)] = description
    })
  }
  return descriptions
}
