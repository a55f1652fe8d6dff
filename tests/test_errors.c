/* placeholder: being written */
#include <criterion/criterion.h>
Test(placeholder_errors, pending) { cr_assert_fail("not written yet"); }
