/**
 * The bdev modules an engine worker can open, by BdevDesc.module. Adding a
 * module: its folder modules/bdev/<name>/ (engine.ts, reactor.ts, common.ts)
 * and one line here and one in the reactor's table.
 */
import { aioEngine } from '../../modules/bdev/aio/engine';
import { mallocEngine } from '../../modules/bdev/malloc/engine';
import { nullEngine } from '../../modules/bdev/null/engine';
import { uringEngine } from '../../modules/bdev/uring/engine';
import { rbdEngine } from '../../modules/bdev/rbd/engine';
import type { BdevModuleEngine } from './module';

export const BDEV_MODULES: ReadonlyMap<string, BdevModuleEngine> = new Map(
  [mallocEngine, nullEngine, uringEngine, aioEngine, rbdEngine].map((m) => [m.name, m]),
);
