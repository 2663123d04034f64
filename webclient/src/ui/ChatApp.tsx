import { useCallback, useEffect, useMemo, useState, useSyncExternalStore } from 'react';
import type { User } from '@gen/parley/v1/auth';
import type { Room } from '@gen/parley/v1/rooms';
import { logout } from '../api';
import { ChatStore, roomsByActivity } from '../state/store';
import { Sidebar } from './Sidebar';
import { RoomView } from './RoomView';
import { BrowseDialog, DirectDialog, NewRoomDialog } from './Dialogs';

/** The open room lives in the URL hash (#/room/<id>), so reload and the back button work. */
function useRoute(): [string | null, (id: string | null) => void] {
  const parse = () => {
    const m = /^#\/room\/([^/?#]+)/.exec(window.location.hash);
    return m ? decodeURIComponent(m[1]) : null;
  };
  const [room, setRoom] = useState<string | null>(parse);
  useEffect(() => {
    const on = () => setRoom(parse());
    window.addEventListener('hashchange', on);
    return () => window.removeEventListener('hashchange', on);
  }, []);
  const go = useCallback((id: string | null) => {
    const target = id ? `#/room/${encodeURIComponent(id)}` : '#/';
    if (window.location.hash !== target) window.location.hash = target;
    setRoom(id);
  }, []);
  return [room, go];
}

type DialogKind = 'new' | 'browse' | 'direct' | null;

export function ChatApp({ me }: { me: User }) {
  // One engine per user: a session refreshed in another tab (a new `me` object) keeps it.
  // eslint-disable-next-line react-hooks/exhaustive-deps
  const store = useMemo(() => new ChatStore(me), [me.userId]);
  useEffect(() => {
    store.start();
    return () => store.stop();
  }, [store]);
  const state = useSyncExternalStore(store.subscribe, store.getState);
  const [roomId, go] = useRoute();
  const [dialog, setDialog] = useState<DialogKind>(null);

  const entered = (room: Room) => {
    store.addRoom(room);
    setDialog(null);
    go(room.roomId);
  };

  // After leaving a room: the room list on a phone, the first room on a desktop.
  const afterLeave = () => {
    const phone = window.matchMedia('(max-width: 759px)').matches;
    go(phone ? null : roomsByActivity(store.getState().rooms)[0]?.room.roomId ?? null);
  };

  const current = roomId ? state.rooms[roomId] : undefined;
  const showBanner = state.everOnline && state.conn !== 'online';

  return (
    <div className={`app ${roomId ? 'has-room' : 'no-room'}`}>
      {showBanner && (
        <div className="banner" role="status" aria-live="polite">
          <span className="spinner" aria-hidden="true" /> Reconnecting… your messages will be sent when the connection is back.
        </div>
      )}
      <Sidebar
        me={me}
        state={state}
        activeId={roomId}
        onOpen={(id) => go(id)}
        onNewRoom={() => setDialog('new')}
        onBrowse={() => setDialog('browse')}
        onDirect={() => setDialog('direct')}
        onLogout={() => {
          store.stop();
          void logout();
          window.location.hash = '#/';
        }}
      />
      <main className="main" aria-label="Conversation">
        {roomId && current ? (
          <RoomView key={roomId} store={store} state={state} entry={current} me={me} onBack={() => go(null)} onLeft={afterLeave} />
        ) : roomId && !state.roomsLoaded ? (
          <div className="empty">
            <span className="spinner" aria-hidden="true" /> Loading…
          </div>
        ) : (
          <div className="empty">
            <div className="empty-art" aria-hidden="true">
              <svg viewBox="0 0 64 64" width="72" height="72">
                <rect x="4" y="8" width="40" height="30" rx="10" fill="var(--accent)" opacity="0.9" />
                <rect x="20" y="24" width="40" height="30" rx="10" fill="var(--accent-2)" opacity="0.55" />
                <circle cx="16" cy="23" r="3" fill="#fff" />
                <circle cx="24" cy="23" r="3" fill="#fff" />
                <circle cx="32" cy="23" r="3" fill="#fff" />
              </svg>
            </div>
            <h2>{roomId ? 'That room is not in your list' : 'Pick a conversation'}</h2>
            <p className="muted">Choose a room on the left, or start something new.</p>
            <div className="row gap">
              <button className="primary" onClick={() => setDialog('new')}>
                New room
              </button>
              <button onClick={() => setDialog('browse')}>Browse rooms</button>
            </div>
          </div>
        )}
      </main>
      {dialog === 'new' && <NewRoomDialog onClose={() => setDialog(null)} onDone={entered} />}
      {dialog === 'browse' && <BrowseDialog joined={state.rooms} onClose={() => setDialog(null)} onDone={entered} />}
      {dialog === 'direct' && <DirectDialog me={me} onClose={() => setDialog(null)} onDone={entered} />}
    </div>
  );
}
