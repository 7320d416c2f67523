/**
 * The I/O types a bdev supports, as one module's two halves both need them:
 * the engine half answers ioTypeSupported() from it and the reactor half
 * reports it in bdev_get_bdevs' supported_io_types, so the two cannot
 * disagree. Pure data: imported by reactor and engine code alike.
 */
export interface IoTypeSet {
  read: boolean;
  write: boolean;
  flush: boolean;
  unmap: boolean;
  write_zeroes: boolean;
}
