/**
 * The package root (`import ... from 'vhostd'`): the embedding API (Vhostd,
 * reactor/embed.ts) and the App it runs. Thread: main (reactor).
 */
export * from './embed';
export { App, type AppOptions } from './app';
