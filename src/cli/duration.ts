export { parseDuration } from '../core/duration.js';
