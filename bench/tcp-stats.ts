import { readFileSync } from 'node:fs'

/**
 * Machine-wide TCP counters over a window. When clients read slower than a
 * server sends, the bytes pile up in kernel socket buffers; past `tcp_mem`
 * the kernel enters memory pressure and drops and retransmits even on
 * loopback, with backoff, so a connection can stall for seconds and spill
 * its backlog into the next window. The runner reports both counters and
 * replaces a session's connections after such a window.
 */

export interface TcpSample {
  /** TcpExt TCPMemoryPressures: times the kernel entered TCP memory pressure. */
  memoryPressures: number
  /** Tcp RetransSegs: segments retransmitted. */
  retransmits: number
}

/** One counter from the `Group: names…` / `Group: values…` line pairs of /proc/net/netstat and /proc/net/snmp. */
export function readCounter (text: string, group: string, name: string): number | undefined {
  const lines = text.split('\n').filter((line) => line.startsWith(`${group}:`))
  const [header, values] = lines.map((line) => line.trim().split(/\s+/).slice(1))
  const index = header?.indexOf(name) ?? -1
  const value = index === -1 ? undefined : Number(values?.[index])
  return value === undefined || Number.isNaN(value) ? undefined : value
}

export function sampleTcp (): TcpSample | undefined {
  try {
    const memoryPressures = readCounter(readFileSync('/proc/net/netstat', 'utf8'), 'TcpExt', 'TCPMemoryPressures')
    const retransmits = readCounter(readFileSync('/proc/net/snmp', 'utf8'), 'Tcp', 'RetransSegs')
    if (memoryPressures === undefined || retransmits === undefined) return undefined
    return { memoryPressures, retransmits }
  } catch {
    return undefined
  }
}

export function tcpBetween (before: TcpSample | undefined, after: TcpSample | undefined): TcpSample | undefined {
  if (before === undefined || after === undefined) return undefined
  return { memoryPressures: after.memoryPressures - before.memoryPressures, retransmits: after.retransmits - before.retransmits }
}
