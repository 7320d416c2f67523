/** engine/fifo.ts: order across growth and wrap-around, removeWhere keeping order. */
import t from 'tap';
import { Fifo } from '../../engine/fifo';

t.test('keeps order across wrap-around and growth', async (t) => {
  const q = new Fifo<number>(4);
  const out: number[] = [];
  for (let i = 0; i < 3; i++) q.push(i);
  out.push(q.shift(), q.shift());
  for (let i = 3; i < 12; i++) q.push(i); // wraps, then doubles twice
  t.equal(q.length, 10);
  t.equal(q.peek(), 2);
  while (q.length > 0) out.push(q.shift());
  t.same(out, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
});

t.test('removeWhere takes the picked items in order and keeps the rest in order', async (t) => {
  const q = new Fifo<number>(4);
  q.push(100);
  q.shift();
  for (let i = 0; i < 7; i++) q.push(i);
  const taken: number[] = [];
  t.equal(q.removeWhere((n) => n % 2 === 1, (n) => taken.push(n)), 3);
  t.same(taken, [1, 3, 5]);
  const rest: number[] = [];
  q.push(7);
  while (q.length > 0) rest.push(q.shift());
  t.same(rest, [0, 2, 4, 6, 7]);
});
