/**
 * The bdev modules vhostd has, one line each, in the order their RPC methods
 * are listed. Adding a module: a folder modules/bdev/<name>/ with common.ts
 * (what both halves share), reactor.ts (its BdevModule) and engine.ts (its
 * engine half), and one line here (and one in the engine's module table).
 */
import { aioModule } from '../../modules/bdev/aio/reactor';
import { mallocModule } from '../../modules/bdev/malloc/reactor';
import { nullModule } from '../../modules/bdev/null/reactor';
import { uringModule } from '../../modules/bdev/uring/reactor';
import { rbdModule } from '../../modules/bdev/rbd/reactor';
import type { BdevModule } from './module';

export const BDEV_MODULES: readonly BdevModule[] = [
  mallocModule as BdevModule,
  nullModule as BdevModule,
  uringModule as BdevModule,
  aioModule as BdevModule,
  rbdModule as BdevModule,
];
