// The message timeline of one room: pure functions, no I/O.
//
// Messages are placed by seq (the room's order, identical for every
// receiver), never by arrival; a message seen twice (live and in history, or
// replayed after a reconnect) is kept once. `pos` is the resume position: the
// highest seq known in `epoch`, sent as Subscribe.resume_from after a
// reconnect so the server replays exactly what was missed.
import type { Message } from '@gen/parley/v1/chat';
import { Timestamp } from '@gen/google/protobuf/timestamp';

export interface ChatMessage {
  messageId: string;
  roomId: string;
  epoch: string;
  seq: number;
  senderId: string;
  senderUsername: string;
  clientMsgId: string;
  body: string;
  /** Milliseconds since the epoch. */
  time: number;
}

export interface Timeline {
  /** The room epoch the messages and pos belong to ('' until known). */
  epoch: string;
  /** Ascending by seq, one entry per seq. */
  messages: ChatMessage[];
  /** Highest seq known in epoch: the resume position. */
  pos: number;
  /** Whether the newest history page has been merged in. */
  loaded: boolean;
  /** Page token for the next older history page ('' when there is none). */
  olderToken: string;
  /** Seqs withdrawn by the server: never shown again, even if a stale page has them. */
  withdrawn: number[];
}

export const emptyTimeline = (): Timeline => ({ epoch: '', messages: [], pos: 0, loaded: false, olderToken: '', withdrawn: [] });

export function fromProto(m: Message): ChatMessage {
  return {
    messageId: m.messageId,
    roomId: m.roomId,
    epoch: m.epoch,
    seq: Number(m.seq),
    senderId: m.senderId,
    senderUsername: m.senderUsername,
    clientMsgId: m.clientMsgId,
    body: m.body,
    time: m.createTime ? Timestamp.toDate(m.createTime).getTime() : Date.now(),
  };
}

/** Index of the first message with seq >= seq. */
function lowerBound(msgs: ChatMessage[], seq: number): number {
  let lo = 0;
  let hi = msgs.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (msgs[mid].seq < seq) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function insertSorted(msgs: ChatMessage[], m: ChatMessage): ChatMessage[] {
  const i = lowerBound(msgs, m.seq);
  if (i < msgs.length && msgs[i].seq === m.seq) {
    // Seen before: keep one. Same seq is the same message within an epoch.
    if (msgs[i].messageId === m.messageId && msgs[i].body === m.body) return msgs;
    const out = msgs.slice();
    out[i] = m;
    return out;
  }
  if (i === msgs.length) return [...msgs, m];
  return [...msgs.slice(0, i), m, ...msgs.slice(i)];
}

export type ApplyResult = { timeline: Timeline; epochChanged: boolean };

/**
 * Applies a live (or replayed) message. A message from another epoch than the
 * timeline's means the room's counter was reset: the caller must reload the
 * room from history (the returned timeline is reset to the new epoch).
 */
export function applyMessage(tl: Timeline, m: ChatMessage): ApplyResult {
  if (tl.epoch !== '' && m.epoch !== tl.epoch) {
    return { timeline: resetEpoch(tl, m.epoch, m.seq - 1), epochChanged: true };
  }
  if (tl.withdrawn.includes(m.seq)) return { timeline: tl, epochChanged: false };
  const messages = insertSorted(tl.messages, m);
  return {
    timeline: { ...tl, epoch: m.epoch, messages, pos: Math.max(tl.pos, m.seq) },
    epochChanged: false,
  };
}

/**
 * Merges a history page (any order). `latest` says it is the newest page
 * (ListMessages without page token): the timeline counts as loaded. The
 * epoch is adopted from the page when the timeline has none.
 */
export function mergeHistory(tl: Timeline, page: ChatMessage[], olderToken: string, latest: boolean): Timeline {
  let messages = tl.messages;
  let epoch = tl.epoch;
  if (epoch === '' && page.length > 0) {
    epoch = page.reduce((a, b) => (b.seq > a.seq ? b : a)).epoch;
  }
  let pos = tl.pos;
  for (const m of page) {
    if (tl.withdrawn.includes(m.seq)) continue;
    messages = insertSorted(messages, m);
    if (m.epoch === epoch) pos = Math.max(pos, m.seq);
  }
  // Re-merging the newest page must not move the scroll-back cursor forward.
  const older = latest && tl.loaded ? tl.olderToken : olderToken;
  return { ...tl, epoch, messages, pos, loaded: tl.loaded || latest, olderToken: older };
}

/** Removes a withdrawn message (its send never became durable). */
export function withdraw(tl: Timeline, seq: number, messageId?: string): Timeline {
  const messages = tl.messages.filter((m) => !(m.seq === seq && (!messageId || m.messageId === messageId)));
  return { ...tl, messages, withdrawn: [...tl.withdrawn.slice(-99), seq] };
}

/** Starts over in a new epoch at its head: history must be reloaded. */
export function resetEpoch(_tl: Timeline, epoch: string, headSeq: number): Timeline {
  return { ...emptyTimeline(), epoch, pos: Math.max(0, headSeq) };
}

/**
 * Records the head the server reported on Subscribed. A different epoch than
 * the timeline's is an epoch change (the caller reloads history).
 */
export function applyHead(tl: Timeline, epoch: string, seq: number): ApplyResult {
  if (tl.epoch !== '' && epoch !== tl.epoch) return { timeline: resetEpoch(tl, epoch, seq), epochChanged: true };
  return { timeline: { ...tl, epoch, pos: Math.max(tl.pos, seq) }, epochChanged: false };
}

/** Where to resume the room after a reconnect (undefined: live from now). */
export function resumePosition(tl: Timeline): { epoch: string; seq: string } | undefined {
  if (tl.epoch === '') return undefined;
  return { epoch: tl.epoch, seq: String(tl.pos) };
}

export function newestSeq(tl: Timeline): number {
  return tl.messages.length ? tl.messages[tl.messages.length - 1].seq : 0;
}

/** Groups consecutive messages of one author within `gapMs` for display. */
export function groupByAuthor(msgs: ChatMessage[], gapMs = 5 * 60_000): ChatMessage[][] {
  const groups: ChatMessage[][] = [];
  for (const m of msgs) {
    const g = groups[groups.length - 1];
    const last = g?.[g.length - 1];
    if (last && last.senderId === m.senderId && m.time - last.time < gapMs) g.push(m);
    else groups.push([m]);
  }
  return groups;
}
