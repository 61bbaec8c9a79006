{#- One row per order_date that has a counted order, sums over the counted orders of that date
    (contract: marts.fct_daily_revenue). -#}
select
    order_date,
    cast(count(*) as bigint) as order_count,
    {{ sum_money('gross_amount') }} as gross_amount,
    {{ sum_money('discount_amount') }} as discount_amount,
    {{ sum_money('net_amount') }} as net_amount,
    {{ sum_money('amount_paid') }} as amount_paid
from {{ ref('fct_orders') }}
where {{ is_counted_order('status') }}
group by order_date
