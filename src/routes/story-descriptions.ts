import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { scanStoryDescriptions } from '../lib/story-descriptions.ts'
import type { ResolvedOptions } from '../options.ts'

export const StoryDescriptionsSchema = Type.Record(Type.String(), Type.String(), {
  description: 'Story id (file name without .md) to its description'
})

/** `GET /story-descriptions.json`: scanned on every request, so edits to story files show without a restart. */
const storyDescriptionsRoute: FastifyPluginAsyncTypebox<Pick<ResolvedOptions, 'artifactsDir'>> = async function storyDescriptionsRoute (fastify, options) {
  fastify.get('/story-descriptions.json', {
    schema: { response: { 200: StoryDescriptionsSchema } }
  }, async (_request, reply) => {
    reply.header('Cache-Control', 'no-cache')
    return await scanStoryDescriptions(options.artifactsDir)
  })
}

export default storyDescriptionsRoute
