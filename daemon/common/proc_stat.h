// Reading /proc/<pid>/stat and /proc/<pid>/task/<tid>/stat.
#pragma once

#include <string>
#include <vector>

namespace memfed
{

// The fields of the stat file at `path` that follow the command name, in
// order: [0] is field 3 of proc(5) (the state), [11] and [12] fields 14 and
// 15 (utime, stime), [19] field 22 (starttime). The name (field 2) may hold
// spaces and parentheses, so the fields are those after its last ')'.
// Empty if the file cannot be read (the process or thread is gone).
std::vector<std::string> proc_stat_fields(const std::string &path);

// Field `field` of proc(5) (3 or more) as a number; 0 if absent.
unsigned long long proc_stat_number(const std::vector<std::string> &fields, int field);

} // namespace memfed
