import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { createStoryDescriptionScanner } from '../lib/story-descriptions.ts'
import { FileLimits } from '../events/protocol.ts'
import type { ResolvedOptions } from '../options.ts'

export const StoryDescriptionsSchema = Type.Record(Type.String(), Type.String(), {
  description: 'Story id (file name without .md) to its description'
})

/** Set when the directory holds more story files than `FileLimits.storyFiles`: how many there were, and the limit. */
export const TRUNCATED_HEADER = 'x-sprint-story-files-truncated'

/**
 * `GET /story-descriptions.json`: scanned on every request, so edits to story files show without a
 * restart; files whose identity has not changed since the last scan are not read again.
 */
const storyDescriptionsRoute: FastifyPluginAsyncTypebox<Pick<ResolvedOptions, 'artifactsDir'>> = async function storyDescriptionsRoute (fastify, options) {
  const scanner = createStoryDescriptionScanner(options.artifactsDir)
  let warnedFor = 0
  fastify.get('/story-descriptions.json', {
    schema: { response: { 200: StoryDescriptionsSchema } }
  }, async (request, reply) => {
    reply.header('Cache-Control', 'no-cache')
    const scan = await scanner.scan()
    if (scan.truncated) {
      // Once per count, not once per request.
      if (warnedFor !== scan.storyFiles) request.log.warn({ storyFiles: scan.storyFiles, limit: FileLimits.storyFiles }, 'more story files than FileLimits.storyFiles; describing the first ones by name')
      warnedFor = scan.storyFiles
      reply.header(TRUNCATED_HEADER, `${scan.storyFiles} story files; described the first ${FileLimits.storyFiles} by name (FileLimits.storyFiles)`)
    }
    return scan.descriptions
  })
}

export default storyDescriptionsRoute
