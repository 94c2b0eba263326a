// Pages for admins only (users, API keys, device credentials). The menu hides them from
// other roles and the API refuses them anyway (403); a deep link shows this instead.
import type { ReactNode } from "react";
import { Result } from "antd";
import { useUser } from "../hooks/useAuth";
import { isAdmin } from "../api/auth";

export function AdminOnly({ children }: { children: ReactNode }) {
  const user = useUser();
  if (!isAdmin(user)) {
    return <Result status="403" title="Admins only" subTitle="Ask an admin if you need access to this page." />;
  }
  return <>{children}</>;
}
