// The dashboard's two themes. Ant Design's defaults put secondary text, placeholders,
// descriptions' labels and danger text below WCAG AA's 4.5:1; these tokens lift them to
// at least 4.5:1 in both modes (the e2e tests run axe-core on every page in each).
import { theme, type ThemeConfig } from "antd";
import type { ThemeMode } from "../hooks/useTheme";

// Blue #1668dc: white text on it 5.2:1 (buttons, selected menu item), 5.2:1 on white.
const PRIMARY = "#1668dc";
// On #141414 the primary is only 3.6:1 as text: links and tab labels take a lighter blue.
const DARK_LINK = "#4096ff"; // 6.2:1 on #141414

const light: ThemeConfig = {
  algorithm: theme.defaultAlgorithm,
  token: {
    colorPrimary: PRIMARY,
    colorLink: PRIMARY,
    colorError: "#cf1322", // 5.6:1 on white (danger buttons and text)
    colorTextSecondary: "rgba(0, 0, 0, 0.65)",
    colorTextTertiary: "rgba(0, 0, 0, 0.62)",
    colorTextQuaternary: "rgba(0, 0, 0, 0.58)",
    colorTextPlaceholder: "rgba(0, 0, 0, 0.58)",
    colorTextDisabled: "rgba(0, 0, 0, 0.58)",
  },
};

const dark: ThemeConfig = {
  algorithm: theme.darkAlgorithm,
  token: {
    colorPrimary: PRIMARY,
    colorLink: DARK_LINK,
    colorError: "#ff7875", // 7.2:1 on #141414
    colorTextSecondary: "rgba(255, 255, 255, 0.7)",
    colorTextTertiary: "rgba(255, 255, 255, 0.62)",
    colorTextQuaternary: "rgba(255, 255, 255, 0.58)",
    colorTextPlaceholder: "rgba(255, 255, 255, 0.58)",
    colorTextDisabled: "rgba(255, 255, 255, 0.58)",
  },
  components: {
    // The selected page in the sidebar: white on the primary blue (5.2:1).
    Menu: { itemSelectedColor: "#ffffff", itemSelectedBg: PRIMARY },
    Tabs: { itemSelectedColor: DARK_LINK, itemActiveColor: DARK_LINK, itemHoverColor: DARK_LINK, inkBarColor: DARK_LINK },
  },
};

export function themeConfig(mode: ThemeMode): ThemeConfig {
  return mode === "dark" ? dark : light;
}

/** Recharts props that follow the theme: tick labels, axis lines, grid, tooltip. */
export function useChartTheme() {
  const { token } = theme.useToken();
  const tick = { fontSize: 11, fill: token.colorTextSecondary };
  return {
    axis: { tick, stroke: token.colorBorder },
    grid: { stroke: token.colorBorderSecondary, strokeDasharray: "3 3" },
    tooltip: {
      contentStyle: {
        background: token.colorBgElevated,
        border: `1px solid ${token.colorBorder}`,
        borderRadius: token.borderRadius,
        color: token.colorText,
      },
      labelStyle: { color: token.colorText },
      itemStyle: { color: token.colorText },
      cursor: { stroke: token.colorBorder },
    },
    // The link colour: readable on the page's background in either mode.
    line: token.colorLink,
  };
}
