package postgres

// RecentKeysQuery is the statement RecentKeys runs, for tests of its plan.
const RecentKeysQuery = recentKeysQuery
