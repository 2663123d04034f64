import { describe, expect, it } from 'vitest';
import {
  applyHead,
  applyMessage,
  emptyTimeline,
  fromProto,
  groupByAuthor,
  mergeHistory,
  newestSeq,
  resumePosition,
  withdraw,
  type ChatMessage,
  type Timeline,
} from './timeline';

const msg = (seq: number, over: Partial<ChatMessage> = {}): ChatMessage => ({
  messageId: `m${seq}`,
  roomId: 'r',
  epoch: 'e1',
  seq,
  senderId: 'u1',
  senderUsername: 'ann',
  clientMsgId: `c${seq}`,
  body: `body ${seq}`,
  time: 1_000_000 + seq * 1000,
  ...over,
});

const seqs = (tl: Timeline) => tl.messages.map((m) => m.seq);
const live = (tl: Timeline, ...ms: ChatMessage[]) => ms.reduce((t, m) => applyMessage(t, m).timeline, tl);

describe('timeline ordering', () => {
  it('places messages by seq whatever the arrival order', () => {
    const tl = live(emptyTimeline(), msg(3), msg(1), msg(5), msg(2), msg(4));
    expect(seqs(tl)).toEqual([1, 2, 3, 4, 5]);
    expect(tl.pos).toBe(5);
    expect(tl.epoch).toBe('e1');
  });

  it('keeps one copy of a message seen live, replayed and in history', () => {
    let tl = live(emptyTimeline(), msg(1), msg(2), msg(3));
    tl = live(tl, msg(2), msg(3)); // replay after a reconnect
    tl = mergeHistory(tl, [msg(3), msg(2), msg(1)], '', true);
    expect(seqs(tl)).toEqual([1, 2, 3]);
    const same = applyMessage(tl, msg(2)).timeline;
    expect(same.messages).toBe(tl.messages); // no re-render for a duplicate
  });

  it('merges history pages (newest first) with live messages, and pages older history', () => {
    let tl = live(emptyTimeline(), msg(11), msg(12));
    tl = mergeHistory(tl, [msg(10), msg(9), msg(8)], 'tok-7', true);
    expect(seqs(tl)).toEqual([8, 9, 10, 11, 12]);
    expect(tl.loaded).toBe(true);
    expect(tl.olderToken).toBe('tok-7');
    tl = mergeHistory(tl, [msg(7), msg(6)], '', false);
    expect(seqs(tl)).toEqual([6, 7, 8, 9, 10, 11, 12]);
    expect(tl.olderToken).toBe('');
    // re-merging the newest page (gap fill) does not move the scroll-back cursor
    tl = mergeHistory(tl, [msg(13), msg(12)], 'tok-11', true);
    expect(tl.olderToken).toBe('');
    expect(seqs(tl)).toEqual([6, 7, 8, 9, 10, 11, 12, 13]);
    expect(tl.pos).toBe(13);
  });

  it('adopts the epoch of the newest history message', () => {
    const tl = mergeHistory(emptyTimeline(), [msg(5, { epoch: 'e2' }), msg(4, { epoch: 'e2' })], '', true);
    expect(tl.epoch).toBe('e2');
    expect(resumePosition(tl)).toEqual({ epoch: 'e2', seq: '5' });
  });
});

describe('withdrawal', () => {
  it('removes the message and never shows it again', () => {
    let tl = live(emptyTimeline(), msg(1), msg(2), msg(3));
    tl = withdraw(tl, 2, 'm2');
    expect(seqs(tl)).toEqual([1, 3]);
    tl = live(tl, msg(2));
    tl = mergeHistory(tl, [msg(2)], '', true);
    expect(seqs(tl)).toEqual([1, 3]);
  });

  it('ignores a withdrawal of another message id at that seq', () => {
    let tl = live(emptyTimeline(), msg(1));
    tl = withdraw(tl, 1, 'other');
    expect(seqs(tl)).toEqual([1]);
  });
});

describe('epochs and resume position', () => {
  it('has no resume position before the epoch is known', () => {
    expect(resumePosition(emptyTimeline())).toBeUndefined();
  });

  it('takes the subscribed head as resume position', () => {
    let tl = applyHead(emptyTimeline(), 'e1', 40).timeline;
    expect(resumePosition(tl)).toEqual({ epoch: 'e1', seq: '40' });
    tl = live(tl, msg(41));
    expect(resumePosition(tl)).toEqual({ epoch: 'e1', seq: '41' });
    // an older head (e.g. Subscribed after a replay we already have) never moves it back
    tl = applyHead(tl, 'e1', 30).timeline;
    expect(tl.pos).toBe(41);
  });

  it('resets on a message from a new epoch', () => {
    const tl = live(emptyTimeline(), msg(1), msg(2));
    const r = applyMessage(tl, msg(3, { epoch: 'e2' }));
    expect(r.epochChanged).toBe(true);
    expect(r.timeline.messages).toEqual([]);
    expect(r.timeline.loaded).toBe(false);
    expect(resumePosition(r.timeline)).toEqual({ epoch: 'e2', seq: '2' });
  });

  it('resets on a head from a new epoch', () => {
    const tl = mergeHistory(live(emptyTimeline(), msg(1)), [], 'x', true);
    const r = applyHead(tl, 'e9', 100);
    expect(r.epochChanged).toBe(true);
    expect(r.timeline).toMatchObject({ epoch: 'e9', pos: 100, messages: [], loaded: false });
    expect(applyHead(tl, 'e1', 1).epochChanged).toBe(false);
  });

  it('newestSeq follows the last message', () => {
    expect(newestSeq(emptyTimeline())).toBe(0);
    expect(newestSeq(live(emptyTimeline(), msg(4), msg(2)))).toBe(4);
  });
});

describe('conversions and grouping', () => {
  it('converts a proto message', () => {
    const m = fromProto({
      messageId: 'm1', roomId: 'r', epoch: 'e', seq: '12', senderId: 'u', senderUsername: 'ann',
      clientMsgId: 'c', body: '<b>hi</b>', createTime: { seconds: '1700000000', nanos: 500_000_000 },
    });
    expect(m.seq).toBe(12);
    expect(m.time).toBe(1_700_000_000_500);
    expect(m.body).toBe('<b>hi</b>');
  });

  it('groups consecutive messages of one author within five minutes', () => {
    const g = groupByAuthor([
      msg(1), msg(2), msg(3, { senderId: 'u2' }), msg(4), msg(5, { time: 1_000_000 + 5000 + 10 * 60_000 }),
    ]);
    expect(g.map((x) => x.map((m) => m.seq))).toEqual([[1, 2], [3], [4], [5]]);
  });
});
