// Decides who the user is before any page loads: a session to resume (its refresh
// cookie), or no token needed at all (open mode). A server that wants a login answers 401.
import { useEffect, useState, type ReactNode } from "react";
import { Navigate, useLocation } from "react-router-dom";
import { Spin } from "antd";
import { getTokens, hasSession, refreshTokens, setUser, userFromToken } from "../api/auth";
import { api } from "../api/client";
import { useUser } from "../hooks/useAuth";
import { live } from "../live/socket";

type Gate = "checking" | "ok" | "login";

export function AuthGate({ children }: { children: ReactNode }) {
  const user = useUser();
  const location = useLocation();
  const [gate, setGate] = useState<Gate>(user ? "ok" : "checking");

  useEffect(() => {
    if (user) {
      setGate("ok");
      return;
    }
    let cancelled = false;
    void (async () => {
      const resumed = getTokens() !== null || (hasSession() && (await refreshTokens()));
      const tokens = getTokens();
      if (cancelled) return;
      if (resumed && tokens) {
        // Who this is comes from the server (the token carries the role, not the name);
        // the token's word only when the server cannot say.
        const me = await api.GET("/api/auth/me").catch(() => null);
        if (cancelled) return;
        if (me?.data) {
          const role = me.data.role;
          setUser({
            username: me.data.name,
            role: role === "admin" || role === "operator" ? role : "viewer",
            open: false,
          });
        } else setUser(userFromToken(tokens.access));
        return;
      }
      const probe = await fetch("/api/devices?limit=1").catch(() => null);
      if (cancelled) return;
      if (probe?.status === 401 || probe?.status === 403) setGate("login");
      else setUser({ username: "open mode", role: "admin", open: true });
    })();
    return () => {
      cancelled = true;
    };
  }, [user]);

  useEffect(() => {
    if (user) {
      live.restart(); // a new token: reconnect the WebSocket with it
    }
  }, [user?.username]); // eslint-disable-line react-hooks/exhaustive-deps

  if (gate === "login") {
    const next = encodeURIComponent(location.pathname + location.search);
    return <Navigate to={`/login?next=${next}`} replace />;
  }
  if (!user) return <Spin size="large" style={{ display: "block", margin: "30vh auto" }} />;
  return <>{children}</>;
}
