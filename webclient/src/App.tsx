import { useSyncExternalStore } from 'react';
import { session } from './api';
import { AuthScreen } from './ui/AuthScreen';
import { ChatApp } from './ui/ChatApp';

export function App() {
  const s = useSyncExternalStore(session.subscribe, session.get);
  if (!s) return <AuthScreen />;
  // A new user (or a new sign-in) gets a fresh chat engine.
  return <ChatApp key={s.user.userId} me={s.user} />;
}
