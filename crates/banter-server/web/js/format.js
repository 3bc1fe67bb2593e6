/**
 * Dates and times in the user's locale, through Intl only.
 *
 * Every function takes server milliseconds (`ts`) and an optional `now`, so
 * the output depends on nothing else and reads the same in every view: the
 * day separators of a conversation, the times under messages, the dates of
 * the conversation list and the "last seen" line of a direct peer.
 */

const DAY_MS = 24 * 60 * 60 * 1000;

/** Formats built once; `undefined` as the locale means the user's own. */
const formats = {
  time: new Intl.DateTimeFormat(undefined, { hour: 'numeric', minute: '2-digit' }),
  weekday: new Intl.DateTimeFormat(undefined, { weekday: 'long' }),
  weekdayShort: new Intl.DateTimeFormat(undefined, { weekday: 'short' }),
  date: new Intl.DateTimeFormat(undefined, { weekday: 'long', month: 'long', day: 'numeric' }),
  dateYear: new Intl.DateTimeFormat(undefined, { month: 'long', day: 'numeric', year: 'numeric' }),
  dateShort: new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric' }),
  dateShortYear: new Intl.DateTimeFormat(undefined, { dateStyle: 'short' }),
  full: new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'short' }),
  relativeDay: new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' }),
};

/** Local midnight of the day holding `ts`. */
function startOfDay(ts) {
  const date = new Date(ts);
  date.setHours(0, 0, 0, 0);
  return date.getTime();
}

/**
 * How many calendar days `ts` lies before `now` (0 today, 1 yesterday).
 * Rounding absorbs the 23- and 25-hour days of daylight-saving changes.
 */
function daysAgo(ts, now = Date.now()) {
  return Math.round((startOfDay(now) - startOfDay(ts)) / DAY_MS);
}

/** A key that is equal for two timestamps on the same local day. */
export function dayKey(ts) {
  const date = new Date(ts);
  return `${date.getFullYear()}-${date.getMonth() + 1}-${date.getDate()}`;
}

/** Upper-cases the first letter, for words like "today" that start a label. */
function capitalize(text) {
  return text.charAt(0).toLocaleUpperCase() + text.slice(1);
}

/** "Today", "Yesterday", or the word the locale uses. */
function relativeDay(days) {
  return capitalize(formats.relativeDay.format(-days, 'day'));
}

/** The time of day, such as "14:03" or "2:03 PM". */
export function formatTime(ts) {
  return formats.time.format(ts);
}

/** The full date and time, for tooltips. */
export function formatFull(ts) {
  return formats.full.format(ts);
}

/** The label of a day separator: "Today", "Yesterday", "Monday", "Monday, March 3", or "March 3, 2024". */
export function formatDay(ts, now = Date.now()) {
  const days = daysAgo(ts, now);
  if (days <= 1) return relativeDay(Math.max(days, 0));
  if (days < 7) return formats.weekday.format(ts);
  if (new Date(ts).getFullYear() === new Date(now).getFullYear()) return formats.date.format(ts);
  return formats.dateYear.format(ts);
}

/** The compact date of the conversation list: a time today, then "Yesterday", a weekday, a date. */
export function formatListTime(ts, now = Date.now()) {
  const days = daysAgo(ts, now);
  if (days <= 0) return formatTime(ts);
  if (days === 1) return relativeDay(1);
  if (days < 7) return formats.weekdayShort.format(ts);
  if (new Date(ts).getFullYear() === new Date(now).getFullYear()) return formats.dateShort.format(ts);
  return formats.dateShortYear.format(ts);
}

/** "last seen at 14:03" (today), "last seen yesterday at 14:03", "last seen Monday", "last seen March 3". */
export function formatLastSeen(ts, now = Date.now()) {
  const days = daysAgo(ts, now);
  if (days <= 0) return `last seen at ${formatTime(ts)}`;
  if (days === 1) return `last seen yesterday at ${formatTime(ts)}`;
  if (days < 7) return `last seen ${formats.weekday.format(ts)}`;
  return `last seen ${formats.dateShort.format(ts)}`;
}

/** An ISO timestamp for `<time datetime>`. */
export function isoTime(ts) {
  return new Date(ts).toISOString();
}
