import { useCallback, useEffect, useState } from "react";
import { App, Button, Card, Popconfirm, Space, Switch, Table, Tag, Typography } from "antd";
import { PlusOutlined } from "@ant-design/icons";
import { useUser } from "../../hooks/useAuth";
import { canControl } from "../../api/auth";
import { useDevices } from "../../live/devices";
import { RelativeTime } from "../../components/RelativeTime";
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

  const refresh = useCallback(async () => {
    setRules(await listRules().catch(() => []));
  }, []);
  useEffect(() => {
    void refresh();
    void listTemplates()
      .then(setTemplates)
      .catch(() => undefined);
  }, [refresh]);

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
          scroll={{ x: 700 }}
          locale={{ emptyText: "No rules yet. Start from a template: gas safety, fan on temperature, device offline…" }}
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
            { title: "Name", dataIndex: "name" },
            { title: "When", key: "trigger", render: (_: unknown, r: Rule) => describeTrigger(r.trigger) },
            { title: "Devices", key: "scope", render: (_: unknown, r: Rule) => describeScope(r.scope) },
            { title: "Actions", key: "actions", render: (_: unknown, r: Rule) => r.actions.map((a) => <Tag key={`${a.type}${a.when ?? ""}`}>{a.type}{a.when === "clear" ? " (clear)" : ""}</Tag>) },
            { title: "Fired", dataIndex: "fire_count", width: 70 },
            { title: "Last fired", dataIndex: "last_fired_at", render: (t: string | null) => <RelativeTime iso={t} /> },
            ...(control
              ? [
                  {
                    title: "",
                    key: "edit",
                    render: (_: unknown, r: Rule) => (
                      <Space>
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
          deviceIds={rows.map((d) => d.id)}
          onSave={save}
          onClose={() => setEditing(undefined)}
        />
      )}
    </div>
  );
}
