import { useCallback, useEffect, useMemo, useState } from "react";
import { App, Button, Card, Grid, Popconfirm, Space, Switch, Table, Tag, Typography } from "antd";
import { PlusOutlined } from "@ant-design/icons";
import { useUser } from "../../hooks/useAuth";
import { canControl } from "../../api/auth";
import { useDevices } from "../../live/devices";
import { useLiveEvents } from "../../hooks/useLive";
import { listWebhooks } from "../webhooks/service";
import { RelativeTime } from "../../components/RelativeTime";
import { sortOrder, sortParam, useUrlState } from "../../hooks/useUrlState";
import { RuleBuilder } from "./RuleBuilder";
import {
  createRule,
  deleteRule,
  describeScope,
  describeTrigger,
  listRules,
  listTemplates,
  replaceRule,
  setRuleEnabled,
  type Rule,
  type RuleBody,
  type Template,
} from "./service";

export default function RulesPage() {
  const control = canControl(useUser());
  const { rows } = useDevices();
  const { message } = App.useApp();
  const [rules, setRules] = useState<Rule[] | null>(null);
  const [templates, setTemplates] = useState<Template[]>([]);
  const [editing, setEditing] = useState<Rule | null | undefined>(undefined); // undefined: closed
  const [webhooks, setWebhooks] = useState<{ id: number; name: string }[]>([]);
  const screens = Grid.useBreakpoint();
  const [url, setUrl] = useUrlState({ sort: "" });
  const names = useMemo(() => new Map(rows.map((d) => [d.id, d.name])), [rows]);

  // The counters move as rules fire, without a reload.
  useLiveEvents(["rule_fired"], ["*"], (event) => {
    const p = event.payload as { rule_id: number; fire_count: number; last_fired_at: number };
    const last = new Date(p.last_fired_at * 1000).toISOString();
    setRules((list) =>
      list?.map((r) => (r.id === p.rule_id ? { ...r, fire_count: p.fire_count, last_fired_at: last } : r)) ?? list,
    );
  });

  const refresh = useCallback(async () => {
    setRules(await listRules().catch(() => []));
  }, []);
  useEffect(() => {
    void refresh();
    void listTemplates()
      .then(setTemplates)
      .catch(() => undefined);
  }, [refresh]);
  useEffect(() => {
    if (editing !== undefined) void listWebhooks().then(setWebhooks, () => undefined);
  }, [editing]);

  async function save(body: RuleBody) {
    if (editing) await replaceRule(editing.id, body);
    else await createRule(body);
    message.success(editing ? "Rule saved" : "Rule created");
    setEditing(undefined);
    await refresh();
  }

  async function toggle(rule: Rule, enabled: boolean) {
    const updated = await setRuleEnabled(rule.id, enabled).catch(() => null);
    if (updated) setRules((list) => (list ?? []).map((r) => (r.id === updated.id ? updated : r)));
  }

  return (
    <div>
      <Typography.Title level={2}>Automations</Typography.Title>
      <Card
        title="Rules"
        extra={
          control && (
            <Button type="primary" icon={<PlusOutlined />} onClick={() => setEditing(null)}>
              New rule
            </Button>
          )
        }
      >
        <Table
          size="small"
          rowKey="id"
          loading={rules === null}
          dataSource={rules ?? []}
          pagination={{ pageSize: 50, hideOnSinglePage: true }}
          locale={{ emptyText: "No rules yet. Start from a template: gas safety, fan on temperature, device offline…" }}
          onChange={(_pagination, _filters, sorter) => setUrl({ sort: sortParam(sorter) })}
          columns={[
            {
              title: "Enabled",
              dataIndex: "enabled",
              width: 80,
              render: (on: boolean | undefined, r: Rule) =>
                control ? (
                  <Switch size="small" checked={on ?? true} aria-label={`enable ${r.name}`} onChange={(v) => toggle(r, v)} />
                ) : (
                  <Tag color={on === false ? "default" : "green"}>{on === false ? "off" : "on"}</Tag>
                ),
            },
            {
              title: "Name",
              dataIndex: "name",
              key: "name",
              sortOrder: sortOrder(url.sort, "name"),
              sorter: (a: Rule, b: Rule) => a.name.localeCompare(b.name),
              render: (name: string, r: Rule) => (
                <div>
                  {name}
                  {!screens.sm && (
                    <div>
                      <Typography.Text type="secondary">{describeTrigger(r.trigger)}</Typography.Text>
                    </div>
                  )}
                </div>
              ),
            },
            { title: "When", key: "trigger", responsive: ["sm"], render: (_: unknown, r: Rule) => describeTrigger(r.trigger) },
            { title: "Devices", key: "scope", responsive: ["md"], render: (_: unknown, r: Rule) => describeScope(r.scope, names) },
            {
              title: "Actions",
              key: "actions",
              responsive: ["lg"],
              render: (_: unknown, r: Rule) => (
                <Space size={[0, 4]} wrap>
                  {r.actions.map((a, i) => (
                    <Tag key={i}>
                      {a.type}
                      {a.when === "clear" ? " (clear)" : ""}
                    </Tag>
                  ))}
                </Space>
              ),
            },
            {
              title: "Fired",
              dataIndex: "fire_count",
              key: "fired",
              width: 90,
              sortOrder: sortOrder(url.sort, "fired"),
              sorter: (a: Rule, b: Rule) => a.fire_count - b.fire_count,
              render: (n: number, r: Rule) => <span data-testid={`fired-${r.id}`}>{n}</span>,
            },
            {
              title: "Last fired",
              dataIndex: "last_fired_at",
              key: "last_fired",
              responsive: ["sm"],
              sortOrder: sortOrder(url.sort, "last_fired"),
              sorter: (a: Rule, b: Rule) => Date.parse(a.last_fired_at ?? "0") - Date.parse(b.last_fired_at ?? "0"),
              render: (t: string | null) => <RelativeTime iso={t} />,
            },
            ...(control
              ? [
                  {
                    title: "",
                    key: "edit",
                    render: (_: unknown, r: Rule) => (
                      <Space wrap size={4}>
                        <Button size="small" onClick={() => setEditing(r)}>
                          Edit
                        </Button>
                        <Popconfirm title={`Delete ${r.name}?`} onConfirm={() => deleteRule(r.id).then(refresh, () => undefined)}>
                          <Button size="small" danger>
                            Delete
                          </Button>
                        </Popconfirm>
                      </Space>
                    ),
                  },
                ]
              : []),
          ]}
        />
      </Card>
      {control && (
        <RuleBuilder
          open={editing !== undefined}
          rule={editing ?? null}
          templates={templates}
          devices={rows}
          webhooks={webhooks}
          onSave={save}
          onClose={() => setEditing(undefined)}
        />
      )}
    </div>
  );
}
