/**
 * Every virtio constant vhostd uses, in one place, with the spec section it
 * comes from (virtio 1.2). Constants only: the reactor imports this module
 * as it imports control.ts (feature negotiation, config space), and nothing
 * here runs.
 */

/** virtio feature bits (virtio 1.2 §6, §5.2.3). */
export const enum VirtioFeature {
  RingIndirectDesc = 28,
  RingEventIdx = 29,
  VhostUserProtocolFeatures = 30,
  Version1 = 32,
  AccessPlatform = 33,
  RingPacked = 34,
}

/** virtio-blk feature bits (virtio 1.2 §5.2.3). */
export const enum BlkFeature {
  SizeMax = 1,
  SegMax = 2,
  Geometry = 4,
  Ro = 5,
  BlkSize = 6,
  Flush = 9,
  Topology = 10,
  ConfigWce = 11,
  Mq = 12,
  Discard = 13,
  WriteZeroes = 14,
}
