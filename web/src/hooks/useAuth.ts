import { useSyncExternalStore } from "react";
import { getUser, onAuthChange, type User } from "../api/auth";

export function useUser(): User | null {
  return useSyncExternalStore(onAuthChange, getUser);
}
