import { beforeEach, describe, expect, it, vi } from "vitest";
import { fireEvent, render, screen, waitFor, within } from "@testing-library/react";
import { App } from "antd";
import type { User } from "../../api/auth";
import type { ApiKey, UserRow } from "./service";

const me = vi.hoisted(() => ({ current: { username: "admin", role: "admin", open: false } as User | null }));
vi.mock("../../hooks/useAuth", () => ({ useUser: () => me.current }));
vi.mock("./service", async (importOriginal) => ({
  ...(await importOriginal<typeof import("./service")>()),
  listUsers: vi.fn(),
  createUser: vi.fn(),
  updateUser: vi.fn(),
  deleteUser: vi.fn(),
  listApiKeys: vi.fn(),
  createApiKey: vi.fn(),
  revokeApiKey: vi.fn(),
}));
const service = await import("./service");
const { UsersTab, ApiKeysTab } = await import("./UsersPage");
const { ApiError } = await import("../../api/errors");
const { menuItems } = await import("../../components/Shell");

const T = "2026-11-29T10:00:00Z";
const USERS: UserRow[] = [
  { id: 1, username: "admin", role: "admin", disabled: false, created_at: T },
  { id: 2, username: "olga", role: "operator", disabled: false, created_at: T },
];
const KEY: ApiKey = { id: 4, prefix: "ab12cd34", name: "grafana", role: "viewer", created_at: T, last_used_at: null, revoked_at: null };

function wrap(node: React.ReactNode) {
  return render(<App>{node}</App>);
}

/** Confirms the Popconfirm just opened (CSS selectors: role queries are slow here). */
async function confirm() {
  const sel = ".ant-popover:not(.ant-popover-hidden) .ant-popconfirm-buttons .ant-btn-primary";
  await waitFor(() => expect(document.querySelector(sel)).not.toBeNull());
  const all = document.querySelectorAll<HTMLElement>(sel);
  fireEvent.click(all[all.length - 1] as HTMLElement);
}

function rowOf(text: string): HTMLElement {
  return screen.getByText(text).closest("tr") as HTMLElement;
}

beforeEach(() => {
  vi.clearAllMocks();
  vi.mocked(service.listUsers).mockResolvedValue(USERS);
  vi.mocked(service.listApiKeys).mockResolvedValue([KEY]);
});

describe("UsersPage", { timeout: 90_000 }, () => {
  it("lists users, guards self-deletion, deletes others after a confirmation", async () => {
    vi.mocked(service.deleteUser).mockResolvedValue();
    wrap(<UsersTab />);
    await screen.findByText("olga");
    const mine = rowOf("you");
    expect(within(mine).getByText("Delete").closest("button")).toBeDisabled();
    fireEvent.click(within(rowOf("olga")).getByText("Delete"));
    await confirm();
    await waitFor(() => expect(service.deleteUser).toHaveBeenCalledWith(2));
  });

  it("shows the API's refusal clearly (the last admin)", async () => {
    vi.mocked(service.deleteUser).mockRejectedValue(new ApiError(422, "the last admin cannot be deleted", "/api/users/2"));
    wrap(<UsersTab />);
    await screen.findByText("olga");
    fireEvent.click(within(rowOf("olga")).getByText("Delete"));
    await confirm();
    expect(await screen.findByTestId("users-error")).toHaveTextContent("the last admin cannot be deleted");
  });

  it("creates a user with a role", async () => {
    vi.mocked(service.createUser).mockResolvedValue({ id: 3, username: "vera", role: "viewer", disabled: false, created_at: T });
    wrap(<UsersTab />);
    await screen.findByText("olga");
    fireEvent.click(screen.getByText("New user"));
    fireEvent.change(await screen.findByLabelText("Username"), { target: { value: "vera" } });
    fireEvent.change(screen.getByLabelText("Password"), { target: { value: "vera-password" } });
    fireEvent.click(screen.getByText("Create"));
    await waitFor(() => expect(service.createUser).toHaveBeenCalledWith({ username: "vera", password: "vera-password", role: "viewer" }));
  });

  it("creates an API key, shows it once, and revokes one", async () => {
    vi.mocked(service.createApiKey).mockResolvedValue({ ...KEY, id: 5, name: "script", key: "iotp_ff00ff00_secretpart" });
    vi.mocked(service.revokeApiKey).mockResolvedValue({ ...KEY, revoked_at: T });
    wrap(<ApiKeysTab />);
    expect(await screen.findByText("iotp_ab12cd34_…")).toBeInTheDocument();
    fireEvent.click(screen.getByText("New API key"));
    fireEvent.change(await screen.findByLabelText("Name"), { target: { value: "script" } });
    fireEvent.click(screen.getByText("Create"));
    await waitFor(() => expect(service.createApiKey).toHaveBeenCalledWith("script", "viewer"));
    expect(await screen.findByTestId("api-key")).toHaveTextContent("iotp_ff00ff00_secretpart");
    fireEvent.click(screen.getByText("I have stored it"));
    await waitFor(() => expect(screen.queryByTestId("api-key")).toBeNull());
    fireEvent.click(within(rowOf("grafana")).getByText("Revoke"));
    await confirm();
    await waitFor(() => expect(service.revokeApiKey).toHaveBeenCalledWith(4));
  });
});

describe("menu", () => {
  const keys = (u: User | null) => menuItems(u).map((i) => ("key" in i ? i.key : "-"));
  it("shows users and device credentials to admins only", () => {
    expect(keys({ username: "a", role: "admin", open: false })).toEqual(expect.arrayContaining(["/users", "/credentials"]));
    for (const role of ["operator", "viewer"] as const) {
      const k = keys({ username: "x", role, open: false });
      expect(k).not.toContain("/users");
      expect(k).not.toContain("/credentials");
      expect(k).toContain("/devices");
    }
  });
});
