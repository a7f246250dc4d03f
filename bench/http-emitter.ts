import { Agent, request } from 'node:http'
import { serveRequests } from './child-process.ts'
import { CATCH_UP_MS, emitOnePerTurn, type EmitRequest, type EmitResult, type ProgressPayload } from './server-control.ts'

/**
 * The `--emitter http` emitter: its own process, POSTing each event as one
 * `POST /api/events` request (keep-alive, a few sockets), on the same paced
 * one-per-turn schedule as the in-process emitter. Latency is measured from
 * the moment the request is made here, so it includes the HTTP round trip into
 * the server, as an emitter on the same machine sees it. Only events answered
 * with 201 count as emitted (the clients expect exactly those); while the
 * oldest unanswered request is more than CATCH_UP_MS old, new events are
 * shed, as the in-process emitter sheds what is that late: a saturated server
 * shows as an achieved rate below the target, not as an ever-growing queue.
 */

/** Sockets to the server: a few, as an orchestrator's HTTP client would keep. */
const MAX_SOCKETS = 4

export interface HttpEmitRequest extends Omit<EmitRequest, 'emitter'> {
  port: number
}

export interface HttpEmitResult extends EmitResult {
  /** Requests answered with something other than 201, or that failed. */
  failed: number
}

function emitOverHttp ({ port, rate, seconds }: HttpEmitRequest): Promise<HttpEmitResult> {
  const agent = new Agent({ keepAlive: true, maxSockets: MAX_SOCKETS })
  /** Start times of the unanswered requests, oldest first (keep-alive sockets answer in order). */
  const inFlightSince: number[] = []
  let inFlight = 0
  let accepted = 0
  let failed = 0
  let shedByQueue = 0
  let lastAnsweredAt = 0
  const start = performance.now()
  let allAnswered: (() => void) | undefined

  const post = (payload: ProgressPayload): void => {
    const now = performance.now()
    if (inFlightSince.length > 0 && now - inFlightSince[0]! > CATCH_UP_MS) {
      shedByQueue++
      return
    }
    inFlight++
    inFlightSince.push(now)
    const body = JSON.stringify({ type: 'command:progress', payload })
    const done = (ok: boolean): void => {
      if (ok) accepted++
      else failed++
      inFlightSince.shift()
      lastAnsweredAt = performance.now()
      if (--inFlight === 0) allAnswered?.()
    }
    const req = request({
      host: '127.0.0.1',
      port,
      path: '/api/events',
      method: 'POST',
      agent,
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }
    }, (response) => {
      response.resume()
      response.on('end', () => done(response.statusCode === 201))
      response.on('error', () => done(false))
    })
    req.on('error', () => done(false))
    req.end(body)
  }

  const target = { port, emitProgress: post, clientCount: () => 0, close: async () => {} }
  return emitOnePerTurn(target, { rate, seconds }).then(async (paced) => {
    if (inFlight > 0) {
      await new Promise<void>((resolve) => {
        allAnswered = resolve
        setTimeout(resolve, 30_000).unref()
      })
    }
    agent.destroy()
    const elapsedSeconds = Math.max(seconds, (lastAnsweredAt - start) / 1000)
    return {
      ...paced,
      emitted: accepted,
      shed: paced.shed + shedByQueue + failed,
      achievedRate: accepted / elapsedSeconds,
      failed
    }
  })
}

serveRequests({ emit: (args: HttpEmitRequest) => emitOverHttp(args) }, { role: 'http-emitter' }, () => {})
