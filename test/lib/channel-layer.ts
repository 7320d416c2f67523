/**
 * A BdevLayer for device unit tests over bdev module objects the test made
 * (a malloc bdev, or a bdev that completes when the test says so): one
 * channel per bdev, submit() straight to it, no QoS, no NOMEM queue, no
 * iostat (the real layer's own tests cover those). It lets a device test
 * decide exactly when completions are delivered (poll()).
 * Thread: the test's.
 */
import type { Bdev, BdevChannel, BdevIo, BdevIoType } from '../../engine/bdev/bdev';
import type { BdevHandle, BdevLayer, BdevUser } from '../../engine/bdev/layer';
import type { BdevDesc } from '../../engine/control';

interface Entry {
  bdev: Bdev;
  channel: BdevChannel;
  users: BdevUser[];
  numBlocks: number;
}

export class ChannelLayer implements BdevLayer {
  private readonly entries = new Map<string, Entry>();
  /** drain() calls seen, per bdev name. */
  readonly drains = new Map<string, number>();

  constructor(bdevs: Bdev[]) {
    for (const bdev of bdevs) this.entries.set(bdev.name, { bdev, channel: bdev.createChannel(), users: [], numBlocks: bdev.numBlocks });
  }

  get openCount(): number {
    let n = 0;
    for (const e of this.entries.values()) if (e.users.length > 0) n++;
    return n;
  }

  open(desc: BdevDesc, user: BdevUser): BdevHandle {
    const e = this.entries.get(desc.name);
    if (e === undefined) throw new Error(`no bdev ${desc.name}`);
    e.users.push(user);
    const drains = this.drains;
    return {
      name: e.bdev.name,
      blockSize: e.bdev.blockSize,
      get numBlocks() {
        return e.numBlocks;
      },
      ioTypeSupported: (type: BdevIoType) => e.bdev.ioTypeSupported(type),
      submit: (io: BdevIo) => e.channel.submit(io),
      get outstanding() {
        return e.channel.outstanding;
      },
      drain: () => drains.set(e.bdev.name, (drains.get(e.bdev.name) ?? 0) + 1),
      close: () => {
        e.users.splice(e.users.indexOf(user), 1);
      },
    };
  }

  poll(): number {
    let n = 0;
    for (const e of this.entries.values()) n += e.channel.poll();
    return n;
  }

  resize(name: string, numBlocks: number): number {
    const e = this.entries.get(name);
    if (e === undefined) return 0;
    e.numBlocks = numBlocks;
    for (const u of e.users) u.bdevResized(numBlocks);
    return e.users.length;
  }
}
